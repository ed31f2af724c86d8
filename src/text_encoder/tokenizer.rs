//! The T5 tokenizer exactly as transformers 5.x `T5Tokenizer` builds it, from
//! either layout a checkpoint may ship in `tokenizer/`:
//! - `spiece.model` (what the published CogVideoX repos hold), decoded here
//!   and assembled like `TokenizersBackend._convert_from_sentencepiece` +
//!   `T5Converter.convert_from_spm` + `T5Tokenizer.__init__`;
//! - `tokenizer.json` (what transformers 5.x `save_pretrained` writes), from
//!   which transformers also keeps only the unigram vocabulary and the
//!   precompiled charsmap and rebuilds the rest, so we do the same.
//!
//! The pipeline transformers 5.x builds, whatever `legacy` or
//! `add_prefix_space` say in `tokenizer_config.json`:
//! - model: Unigram over the SentencePiece pieces followed by
//!   `<extra_id_{n-1}>` ... `<extra_id_0>` (score 0), no byte fallback;
//! - normalizer: the precompiled charsmap only (no strip, no space
//!   collapsing: whitespace is handled by the pre-tokenizer);
//! - pre-tokenizer: split on whitespace, then Metaspace (`▁`, prepended to
//!   every word);
//! - added tokens: `<pad>`, `</s>`, `<unk>`, the extra ids (all special,
//!   matched in the raw text before normalization) and any other token of
//!   `added_tokens_decoder`;
//! - post-processing `$A </s>`, truncation and padding: see [`T5Tokenizer::encode`].

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::normalizers::precompiled::Precompiled;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
use tokenizers::{AddedToken, Tokenizer};

use super::sentencepiece::{self, PieceType};
use crate::error::{Error, Result};

const DEFAULT_EXTRA_IDS: usize = 100;

/// A T5 tokenizer producing the ids `T5Tokenizer(prompt, padding="max_length",
/// max_length=n, truncation=True)` produces.
#[derive(Debug, Clone)]
pub struct T5Tokenizer {
    inner: Tokenizer,
    eos_id: u32,
    pad_id: u32,
    model_max_length: Option<usize>,
}

/// A token spelled either as a bare string or as an `AddedToken` object.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum TokenSpec {
    Text(String),
    Object { content: String },
}

impl TokenSpec {
    fn content(&self) -> &str {
        match self {
            TokenSpec::Text(s) | TokenSpec::Object { content: s } => s,
        }
    }
}

/// An entry of `added_tokens_decoder` or of tokenizer.json's `added_tokens`.
/// Defaults are those of `tokenizers.AddedToken`.
#[derive(Debug, Clone, Deserialize)]
struct AddedTokenEntry {
    content: String,
    #[serde(default)]
    single_word: bool,
    #[serde(default)]
    lstrip: bool,
    #[serde(default)]
    rstrip: bool,
    normalized: Option<bool>,
    #[serde(default)]
    special: bool,
}

impl AddedTokenEntry {
    fn to_added_token(&self) -> AddedToken {
        AddedToken::from(self.content.clone(), self.special)
            .single_word(self.single_word)
            .lstrip(self.lstrip)
            .rstrip(self.rstrip)
            .normalized(self.normalized.unwrap_or(!self.special))
    }
}

/// The keys of `tokenizer_config.json` / `special_tokens_map.json` that
/// change tokenization. Everything else (`legacy`, `add_prefix_space`,
/// `clean_up_tokenization_spaces`, ...) has no effect in transformers 5.x.
#[derive(Debug, Default, Deserialize)]
struct TokenizerConfig {
    added_tokens_decoder: Option<BTreeMap<String, AddedTokenEntry>>,
    eos_token: Option<TokenSpec>,
    unk_token: Option<TokenSpec>,
    pad_token: Option<TokenSpec>,
    additional_special_tokens: Option<Vec<TokenSpec>>,
    /// transformers 5.x name for `additional_special_tokens`; a map form
    /// (model-specific named tokens) contributes its values.
    extra_special_tokens: Option<Value>,
    extra_ids: Option<usize>,
    /// May be `1e30`-like ("no limit"), so read loosely.
    model_max_length: Option<Value>,
}

/// The `model` of a tokenizer.json.
#[derive(Debug, Deserialize)]
struct JsonModel {
    #[serde(rename = "type")]
    kind: Option<String>,
    unk_id: Option<usize>,
    #[serde(default)]
    vocab: Vec<(String, f64)>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::bad_checkpoint(path, e))
}

fn read_json_if_present<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T> {
    if path.is_file() {
        read_json(path)
    } else {
        Ok(T::default())
    }
}

/// What the two layouts contribute before the common assembly.
struct Parts {
    vocab: Vec<(String, f64)>,
    unk_id: usize,
    charsmap: Option<Precompiled>,
    /// SentencePiece control (special) and user-defined (not special) pieces.
    spm_added: Vec<AddedToken>,
    /// tokenizer.json's `added_tokens` (read only when the config has no
    /// `added_tokens_decoder`, as transformers does).
    json_added: Vec<(u32, AddedTokenEntry)>,
    source: PathBuf,
}

fn parts_from_spiece(path: &Path, extra_ids: usize) -> Result<Parts> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let model = sentencepiece::parse(&bytes)
        .map_err(|e| Error::bad_checkpoint(path, format!("unreadable SentencePiece model: {e}")))?;
    let unk_id = model
        .pieces
        .iter()
        .position(|p| p.kind == PieceType::Unknown)
        .ok_or_else(|| Error::bad_checkpoint(path, "no piece of type UNKNOWN"))?;
    let charsmap =
        if model.precompiled_charsmap.is_empty() {
            None
        } else {
            Some(Precompiled::from(&model.precompiled_charsmap).map_err(|e| {
                Error::bad_checkpoint(path, format!("bad precompiled_charsmap: {e}"))
            })?)
        };
    let spm_added = model
        .pieces
        .iter()
        .filter(|p| matches!(p.kind, PieceType::Control | PieceType::UserDefined))
        .map(|p| AddedToken::from(p.piece.clone(), p.kind == PieceType::Control).normalized(false))
        .collect();
    // Scores are f32 in the proto; Python widens them exactly.
    let mut vocab: Vec<(String, f64)> = model
        .pieces
        .into_iter()
        .map(|p| (p.piece, f64::from(p.score)))
        .collect();
    vocab.extend(
        (0..extra_ids)
            .rev()
            .map(|i| (format!("<extra_id_{i}>"), 0.0)),
    );
    Ok(Parts {
        vocab,
        unk_id,
        charsmap,
        spm_added,
        json_added: Vec::new(),
        source: path.to_path_buf(),
    })
}

/// The first `Precompiled` normalizer, looking inside sequences.
fn find_precompiled(n: NormalizerWrapper) -> Option<Precompiled> {
    match n {
        NormalizerWrapper::Precompiled(p) => Some(p),
        NormalizerWrapper::Sequence(seq) => seq.into_iter().find_map(find_precompiled),
        _ => None,
    }
}

fn parts_from_tokenizer_json(path: &Path) -> Result<Parts> {
    let bad = |msg: String| Error::bad_checkpoint(path, msg);
    let mut json: Value = read_json(path)?;
    let model: JsonModel = serde_json::from_value(json["model"].take())
        .map_err(|e| bad(format!("unreadable `model`: {e}")))?;
    if model.kind.as_deref() != Some("Unigram") || model.vocab.is_empty() {
        return Err(bad(format!(
            "model type {:?} with {} pieces: a T5 tokenizer needs a non-empty Unigram vocabulary",
            model.kind,
            model.vocab.len()
        )));
    }
    let unk_id = model
        .unk_id
        .ok_or_else(|| bad("the Unigram model has no unk_id".into()))?;
    let charsmap = match json["normalizer"].take() {
        Value::Null => None,
        n => {
            let n: NormalizerWrapper = serde_json::from_value(n)
                .map_err(|e| bad(format!("unreadable `normalizer`: {e}")))?;
            find_precompiled(n)
        }
    };
    let json_added = match json["added_tokens"].take() {
        Value::Null => Vec::new(),
        v => {
            #[derive(Deserialize)]
            struct WithId {
                id: u32,
                #[serde(flatten)]
                token: AddedTokenEntry,
            }
            let list: Vec<WithId> = serde_json::from_value(v)
                .map_err(|e| bad(format!("unreadable `added_tokens`: {e}")))?;
            list.into_iter().map(|t| (t.id, t.token)).collect()
        }
    };
    Ok(Parts {
        vocab: model.vocab,
        unk_id,
        charsmap,
        spm_added: Vec::new(),
        json_added,
        source: path.to_path_buf(),
    })
}

impl T5Tokenizer {
    /// Loads `dir` (a checkpoint's `tokenizer/` folder): `tokenizer.json`
    /// when present, otherwise `spiece.model`, plus `tokenizer_config.json`,
    /// `special_tokens_map.json` and `added_tokens.json` when present.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer folder not found"),
            ));
        }
        let mut cfg: TokenizerConfig = read_json_if_present(&dir.join("tokenizer_config.json"))?;
        let extra_ids = cfg.extra_ids.unwrap_or(DEFAULT_EXTRA_IDS);

        let json_path = dir.join("tokenizer.json");
        let spm_path = dir.join("spiece.model");
        let parts = if json_path.is_file() {
            parts_from_tokenizer_json(&json_path)?
        } else if spm_path.is_file() {
            parts_from_spiece(&spm_path, extra_ids)?
        } else {
            return Err(Error::io(
                &spm_path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no tokenizer: neither tokenizer.json nor spiece.model",
                ),
            ));
        };

        // transformers reads the legacy files only when the config carries no
        // `added_tokens_decoder`; special_tokens_map.json then overrides it.
        let mut declared: Vec<(u32, AddedTokenEntry)> = Vec::new();
        match cfg.added_tokens_decoder.take() {
            Some(decoder) => {
                for (id, entry) in decoder {
                    let id = id.parse::<u32>().map_err(|_| {
                        Error::bad_checkpoint(
                            dir.join("tokenizer_config.json"),
                            format!("added_tokens_decoder key `{id}` is not a token id"),
                        )
                    })?;
                    declared.push((id, entry));
                }
            }
            None => {
                let map: TokenizerConfig =
                    read_json_if_present(&dir.join("special_tokens_map.json"))?;
                cfg.eos_token = map.eos_token.or(cfg.eos_token);
                cfg.unk_token = map.unk_token.or(cfg.unk_token);
                cfg.pad_token = map.pad_token.or(cfg.pad_token);
                cfg.additional_special_tokens = map
                    .additional_special_tokens
                    .or(cfg.additional_special_tokens);
                let special = special_names(&cfg, extra_ids);
                let added: BTreeMap<String, u32> =
                    read_json_if_present(&dir.join("added_tokens.json"))?;
                for (content, id) in added {
                    let is_special = special.contains(&content);
                    declared.push((
                        id,
                        AddedTokenEntry {
                            content,
                            single_word: false,
                            lstrip: false,
                            rstrip: false,
                            normalized: Some(!is_special),
                            special: is_special,
                        },
                    ));
                }
                declared.extend(parts.json_added.iter().cloned());
            }
        }
        declared.sort_by_key(|(id, _)| *id);
        Self::assemble(parts, &cfg, extra_ids, &declared)
    }

    fn assemble(
        parts: Parts,
        cfg: &TokenizerConfig,
        extra_ids: usize,
        declared: &[(u32, AddedTokenEntry)],
    ) -> Result<Self> {
        let source = parts.source;
        let bad = |msg: String| Error::bad_checkpoint(&source, msg);
        if parts.unk_id >= parts.vocab.len() {
            return Err(bad(format!(
                "unk id {} is outside the vocabulary of {}",
                parts.unk_id,
                parts.vocab.len()
            )));
        }
        let model = Unigram::from(parts.vocab, Some(parts.unk_id), false)
            .map_err(|e| bad(format!("cannot build the unigram model: {e}")))?;
        let mut inner = Tokenizer::new(model);
        // Set before adding tokens so normalized added tokens are matched
        // against normalized text.
        inner
            .with_normalizer(parts.charsmap)
            .map_err(|e| bad(format!("cannot install the normalizer: {e}")))?;
        inner.with_pre_tokenizer(Some(Sequence::new(vec![
            WhitespaceSplit.into(),
            Metaspace::new('▁', PrependScheme::Always, true).into(),
        ])));

        // First spelling of a token wins, as in transformers, which adds the
        // declared tokens first and then only the special tokens not yet known.
        let mut seen = HashSet::new();
        let mut to_add = Vec::new();
        let mut push = |t: AddedToken| {
            if seen.insert(t.content.clone()) {
                to_add.push(t);
            }
        };
        for (_, entry) in declared {
            push(entry.to_added_token());
        }
        let named = [&cfg.eos_token, &cfg.unk_token, &cfg.pad_token];
        let defaults = ["</s>", "<unk>", "<pad>"];
        let [eos, unk, pad] = [0, 1, 2].map(|i| {
            named[i]
                .as_ref()
                .map_or(defaults[i].to_string(), |t| t.content().to_string())
        });
        for name in [&eos, &unk, &pad] {
            push(AddedToken::from(name.clone(), true));
        }
        for t in parts.spm_added {
            push(t);
        }
        for name in extra_special(cfg, extra_ids) {
            push(AddedToken::from(name, true));
        }
        inner
            .add_tokens(to_add)
            .map_err(|e| bad(format!("cannot add special tokens: {e}")))?;

        for (id, entry) in declared {
            let got = inner.token_to_id(&entry.content);
            if got != Some(*id) {
                return Err(bad(format!(
                    "added token `{}` is declared with id {id} but the vocabulary gives it {got:?}",
                    entry.content
                )));
            }
        }
        let id_of = |name: &str| {
            inner
                .token_to_id(name)
                .ok_or_else(|| bad(format!("special token `{name}` is not in the vocabulary")))
        };
        let eos_id = id_of(&eos)?;
        let pad_id = id_of(&pad)?;
        let model_max_length = cfg
            .model_max_length
            .as_ref()
            .and_then(Value::as_f64)
            // transformers writes "no limit" as 1e30
            .filter(|n| (1.0..1e18).contains(n))
            .map(|n| n as usize);
        Ok(Self {
            inner,
            eos_id,
            pad_id,
            model_max_length,
        })
    }

    /// The ids for one prompt as the CogVideoX pipelines request them:
    /// the pieces, cut to `max_len - 1`, then `</s>`, then `<pad>` up to
    /// exactly `max_len` ids (what `padding="max_length", truncation=True,
    /// add_special_tokens=True` gives with T5's `$A </s>` template).
    pub fn encode(&self, prompt: &str, max_len: usize) -> Result<Vec<u32>> {
        if max_len == 0 {
            return Err(Error::invalid("max_len must leave room for </s>"));
        }
        let enc = self
            .inner
            .encode(prompt, false)
            .map_err(|e| Error::invalid(format!("cannot tokenize the prompt: {e}")))?;
        let pieces = enc.get_ids();
        let mut ids = Vec::with_capacity(max_len);
        ids.extend_from_slice(&pieces[..pieces.len().min(max_len - 1)]);
        ids.push(self.eos_id);
        ids.resize(max_len, self.pad_id);
        Ok(ids)
    }

    /// Vocabulary size including added tokens (the largest id plus one for T5).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// `model_max_length` from `tokenizer_config.json` (226 in the CogVideoX
    /// checkpoints), `None` when absent or unlimited. The pipelines pass
    /// their own `max_sequence_length`, so this is informative only.
    pub fn model_max_length(&self) -> Option<usize> {
        self.model_max_length
    }
}

/// Additional special tokens: the config's lists, else `<extra_id_0..n>`.
fn extra_special(cfg: &TokenizerConfig, extra_ids: usize) -> Vec<String> {
    let mut out: Vec<String> = cfg
        .additional_special_tokens
        .iter()
        .flatten()
        .map(|t| t.content().to_string())
        .collect();
    match &cfg.extra_special_tokens {
        Some(Value::Array(list)) => out.extend(list.iter().filter_map(token_content)),
        Some(Value::Object(map)) => out.extend(map.values().filter_map(token_content)),
        _ => {}
    }
    if !out.iter().any(|t| t.starts_with("<extra_id_")) {
        out.extend((0..extra_ids).map(|i| format!("<extra_id_{i}>")));
    }
    out
}

fn token_content(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// Names treated as special when reading the legacy `added_tokens.json`.
fn special_names(cfg: &TokenizerConfig, extra_ids: usize) -> HashSet<String> {
    let mut names: HashSet<String> = [&cfg.eos_token, &cfg.unk_token, &cfg.pad_token]
        .into_iter()
        .flatten()
        .map(|t| t.content().to_string())
        .collect();
    names.extend(extra_special(cfg, extra_ids));
    names
}
