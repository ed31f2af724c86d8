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
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::normalizers::precompiled::Precompiled;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
use tokenizers::{AddedToken, NormalizedString, Normalizer, Tokenizer};

use super::sentencepiece::{self, PieceType};
use crate::checkpoint::{read_config, read_regular_file};
use crate::error::{Error, Result};

/// `extra_ids` when the config does not say: transformers' default, and what
/// every T5 checkpoint uses.
const DEFAULT_EXTRA_IDS: usize = 100;
/// Most `extra_ids` accepted (each becomes a vocabulary entry).
const MAX_EXTRA_IDS: u64 = 1000;

/// Longest vocabulary piece accepted, in bytes. SentencePiece trains pieces
/// of at most `max_sentencepiece_length` characters, 16 by default (at most
/// 64 bytes), and never more than 512. tokenizers' unigram trie has one node
/// per byte of a piece and frees them recursively, so a piece of tens of
/// thousands of bytes overflows the stack when the tokenizer is dropped.
const MAX_PIECE_BYTES: usize = 256;

/// Largest tokenizer files read. T5's spiece.model is 0.8 MB and its
/// tokenizer.json 2.4 MB; mT5's, with 250k pieces, 4.3 MB and 16 MB.
const MAX_SPIECE_BYTES: u64 = 16 << 20;
const MAX_TOKENIZER_JSON_BYTES: u64 = 64 << 20;

/// Largest `max_len` [`T5Tokenizer::encode`] accepts (the pipelines use 226).
pub const MAX_ENCODE_LEN: usize = 1 << 16;
/// Prompt bytes read per id requested: prose takes 2 to 8 bytes per T5
/// piece, so only text that yields almost nothing (whitespace, characters
/// the normalizer drops) or a run without spaces that long is ever cut.
const PROMPT_BYTES_PER_ID: usize = 256;
/// Prompt bytes tokenized at a time (about a thousand pieces of prose).
const CHUNK_BYTES: usize = 4096;

/// A T5 tokenizer producing the ids `T5Tokenizer(prompt, padding="max_length",
/// max_length=n, truncation=True)` produces.
#[derive(Debug, Clone)]
pub struct T5Tokenizer {
    inner: Tokenizer,
    eos_id: u32,
    pad_id: u32,
    model_max_length: Option<usize>,
    /// Whether the text on either side of a space may be tokenized apart
    /// (see [`next_cut`]): the normalizer keeps a space whitespace and no
    /// added token contains whitespace, so none can match across it.
    cut_at_spaces: bool,
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
    /// Checked by [`extra_ids`].
    extra_ids: Option<Value>,
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

/// Whether a file is there at all, so that a FIFO, a device or a dangling
/// link is reported by the read rather than skipped as absent.
fn present(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

fn read_config_if_present<T: DeserializeOwned + Default>(path: &Path) -> Result<T> {
    if present(path) {
        read_config(path)
    } else {
        Ok(T::default())
    }
}

/// `extra_ids` of `tokenizer_config.json` (at `path`).
fn extra_ids(cfg: &TokenizerConfig, path: &Path) -> Result<usize> {
    let Some(v) = &cfg.extra_ids else {
        return Ok(DEFAULT_EXTRA_IDS);
    };
    v.as_u64()
        .filter(|&n| n <= MAX_EXTRA_IDS)
        .map(|n| n as usize)
        .ok_or_else(|| {
            Error::bad_checkpoint(
                path,
                format!(
                    "extra_ids = {v}: expected an integer from 0 to {MAX_EXTRA_IDS} (T5 uses 100)"
                ),
            )
        })
}

/// An added token declared by a side file, with the file and the field
/// (`field: ` for messages, empty for added_tokens.json's flat map) that
/// declared it.
struct Declared {
    id: u32,
    entry: AddedTokenEntry,
    file: PathBuf,
    field: &'static str,
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
    /// The field of `source` holding the pieces, for messages.
    vocab_field: &'static str,
}

fn parts_from_spiece(path: &Path, extra_ids: usize) -> Result<Parts> {
    let bytes = read_regular_file(path, MAX_SPIECE_BYTES)?;
    let model = sentencepiece::parse(&bytes)
        .map_err(|e| Error::bad_checkpoint(path, format!("unreadable SentencePiece model: {e}")))?;
    let unk_id = model
        .pieces
        .iter()
        .position(|p| p.kind == PieceType::Unknown)
        .ok_or_else(|| Error::bad_checkpoint(path, "pieces: none of type UNKNOWN"))?;
    let charsmap = if model.precompiled_charsmap.is_empty() {
        None
    } else {
        let bad = |e: String| {
            Error::bad_checkpoint(path, format!("normalizer_spec.precompiled_charsmap: {e}"))
        };
        sentencepiece::check_charsmap(&model.precompiled_charsmap).map_err(bad)?;
        Some(Precompiled::from(&model.precompiled_charsmap).map_err(|e| bad(e.to_string()))?)
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
        vocab_field: "pieces",
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

/// Standard base64, padded or not, as the `base64` crate behind
/// `spm_precompiled` decodes it.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let digits = text.trim_end_matches('=');
    if text.len() - digits.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(digits.len() / 4 * 3 + 2);
    let (mut acc, mut bits) = (0u32, 0);
    for c in digits.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = acc << 6 | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Checks every `Precompiled` charsmap under a tokenizer.json `normalizer`
/// before serde hands it to `spm_precompiled` (see
/// [`sentencepiece::check_charsmap`]).
fn check_json_charsmaps(v: &Value) -> std::result::Result<(), String> {
    match v {
        Value::Object(o) => {
            if o.get("type").and_then(Value::as_str) == Some("Precompiled")
                && let Some(Value::String(b64)) = o.get("precompiled_charsmap")
            {
                let bytes = decode_base64(b64).ok_or("precompiled_charsmap is not base64")?;
                sentencepiece::check_charsmap(&bytes)
                    .map_err(|e| format!("precompiled_charsmap: {e}"))?;
            }
            o.values().try_for_each(check_json_charsmaps)
        }
        Value::Array(a) => a.iter().try_for_each(check_json_charsmaps),
        _ => Ok(()),
    }
}

fn parts_from_tokenizer_json(path: &Path) -> Result<Parts> {
    let bad = |msg: String| Error::bad_checkpoint(path, msg);
    let bytes = read_regular_file(path, MAX_TOKENIZER_JSON_BYTES)?;
    let mut json: Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let model: JsonModel = serde_json::from_value(json["model"].take())
        .map_err(|e| bad(format!("unreadable `model`: {e}")))?;
    match model.kind.as_deref() {
        Some("Unigram") => {}
        Some(kind) => {
            return Err(bad(format!(
                "model.type is \"{kind}\": a T5 tokenizer is a Unigram model"
            )));
        }
        None => {
            return Err(bad(
                "model.type is missing: a T5 tokenizer is a Unigram model".into(),
            ));
        }
    }
    if model.vocab.is_empty() {
        return Err(bad("model.vocab is empty".into()));
    }
    let unk_id = model
        .unk_id
        .ok_or_else(|| bad("model.unk_id is missing".into()))?;
    let charsmap = match json["normalizer"].take() {
        Value::Null => None,
        n => {
            check_json_charsmaps(&n).map_err(|e| bad(format!("normalizer: {e}")))?;
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
        vocab_field: "model.vocab",
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
        let cfg_path = dir.join("tokenizer_config.json");
        let mut cfg: TokenizerConfig = read_config_if_present(&cfg_path)?;
        let extra_ids = extra_ids(&cfg, &cfg_path)?;

        let json_path = dir.join("tokenizer.json");
        let spm_path = dir.join("spiece.model");
        let parts = if present(&json_path) {
            parts_from_tokenizer_json(&json_path)?
        } else if present(&spm_path) {
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
        let mut declared: Vec<Declared> = Vec::new();
        match cfg.added_tokens_decoder.take() {
            Some(decoder) => {
                for (id, entry) in decoder {
                    let id = id.parse::<u32>().map_err(|_| {
                        Error::bad_checkpoint(
                            &cfg_path,
                            format!("added_tokens_decoder key \"{id}\" is not a token id"),
                        )
                    })?;
                    declared.push(Declared {
                        id,
                        entry,
                        file: cfg_path.clone(),
                        field: "added_tokens_decoder: ",
                    });
                }
            }
            None => {
                let map: TokenizerConfig =
                    read_config_if_present(&dir.join("special_tokens_map.json"))?;
                cfg.eos_token = map.eos_token.or(cfg.eos_token);
                cfg.unk_token = map.unk_token.or(cfg.unk_token);
                cfg.pad_token = map.pad_token.or(cfg.pad_token);
                cfg.additional_special_tokens = map
                    .additional_special_tokens
                    .or(cfg.additional_special_tokens);
                let special = special_names(&cfg, extra_ids);
                let added_path = dir.join("added_tokens.json");
                let added: BTreeMap<String, u32> = read_config_if_present(&added_path)?;
                for (content, id) in added {
                    let is_special = special.contains(&content);
                    declared.push(Declared {
                        id,
                        entry: AddedTokenEntry {
                            content,
                            single_word: false,
                            lstrip: false,
                            rstrip: false,
                            normalized: Some(!is_special),
                            special: is_special,
                        },
                        file: added_path.clone(),
                        field: "",
                    });
                }
                declared.extend(parts.json_added.iter().map(|(id, entry)| Declared {
                    id: *id,
                    entry: entry.clone(),
                    file: parts.source.clone(),
                    field: "added_tokens: ",
                }));
            }
        }
        declared.sort_by_key(|d| d.id);
        Self::assemble(parts, &cfg, extra_ids, &declared)
    }

    fn assemble(
        parts: Parts,
        cfg: &TokenizerConfig,
        extra_ids: usize,
        declared: &[Declared],
    ) -> Result<Self> {
        let source = parts.source;
        let bad = |msg: String| Error::bad_checkpoint(&source, msg);
        if parts.unk_id >= parts.vocab.len() {
            return Err(bad(format!(
                "model.unk_id = {}: expected an index below the {} pieces of model.vocab",
                parts.unk_id,
                parts.vocab.len()
            )));
        }
        if let Some((i, (piece, _))) = parts
            .vocab
            .iter()
            .enumerate()
            .find(|(_, (piece, _))| piece.len() > MAX_PIECE_BYTES)
        {
            return Err(bad(format!(
                "{}[{i}] is a piece of {} bytes: pieces are at most {MAX_PIECE_BYTES} bytes",
                parts.vocab_field,
                piece.len()
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
        for d in declared {
            push(d.entry.to_added_token());
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
        let normalize = |text: &str| -> Result<String> {
            let mut s = NormalizedString::from(text);
            if let Some(n) = inner.get_normalizer() {
                n.normalize(&mut s)
                    .map_err(|e| bad(format!("cannot normalize \"{text}\": {e}")))?;
            }
            Ok(s.get().to_string())
        };
        let has_space = |text: &str| text.contains(char::is_whitespace);
        let space = normalize(" ")?;
        let mut cut_at_spaces = !space.is_empty() && space.chars().all(char::is_whitespace);
        for t in &to_add {
            let spaced =
                has_space(&t.content) || t.normalized && has_space(&normalize(&t.content)?);
            cut_at_spaces &= !spaced;
        }
        inner
            .add_tokens(to_add)
            .map_err(|e| bad(format!("cannot add special tokens: {e}")))?;

        for d in declared {
            let content = &d.entry.content;
            let got = inner.token_to_id(content);
            if got != Some(d.id) {
                let got = got.map_or("none".to_string(), |g| format!("id {g}"));
                return Err(Error::bad_checkpoint(
                    &d.file,
                    format!(
                        "{}`{content}` is declared as id {} but the vocabulary gives it {got}",
                        d.field, d.id
                    ),
                ));
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
            cut_at_spaces,
        })
    }

    /// The ids for one prompt as the CogVideoX pipelines request them:
    /// the pieces, cut to `max_len - 1`, then `</s>`, then `<pad>` up to
    /// exactly `max_len` ids (what `padding="max_length", truncation=True,
    /// add_special_tokens=True` gives with T5's `$A </s>` template).
    ///
    /// The prompt is tokenized a few KiB at a time, cut only where
    /// tokenization splits anyway (see [`next_cut`]), until `max_len - 1`
    /// pieces are known, so the ids are those of the whole prompt while
    /// the work stays proportional to what is used. At most
    /// `256 * max_len` bytes of a prompt are read (56 KiB for 226 ids, tens
    /// of times what 225 pieces of prose take): the rest of a prompt that
    /// has not yielded its pieces by then is ignored.
    pub fn encode(&self, prompt: &str, max_len: usize) -> Result<Vec<u32>> {
        if !(1..=MAX_ENCODE_LEN).contains(&max_len) {
            return Err(Error::invalid(format!(
                "max_len = {max_len}: expected 1 to {MAX_ENCODE_LEN} (ids including </s>)"
            )));
        }
        let wanted = max_len - 1;
        let text = &prompt[..prompt.floor_char_boundary(max_len * PROMPT_BYTES_PER_ID)];
        let mut ids = Vec::with_capacity(max_len);
        let mut start = 0;
        while start < text.len() && ids.len() < wanted {
            let end = if self.cut_at_spaces {
                next_cut(text, start + CHUNK_BYTES)
            } else {
                text.len()
            };
            ids.extend(self.piece_ids(&text[start..end])?);
            start = end;
        }
        ids.truncate(wanted);
        ids.push(self.eos_id);
        ids.resize(max_len, self.pad_id);
        Ok(ids)
    }

    /// Every piece id of `text` tokenized whole, without `</s>` or any
    /// length bound: its cost grows with the text, which [`Self::encode`]
    /// avoids.
    pub fn piece_ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Internal(format!("cannot tokenize the prompt: {e}")))?;
        Ok(enc.get_ids().to_vec())
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

/// The first position at or after `from` where `text` can be cut without
/// changing its pieces, or its end. A cut right after a space `' '` and
/// before a character that starts a grapheme cluster qualifies when
/// [`T5Tokenizer::cut_at_spaces`] holds:
/// - no added token contains whitespace, so no match spans the space, and
///   the `lstrip`/`rstrip`/`single_word` rules only see whitespace (which
///   yields no piece) at the cut on either side;
/// - the space is a grapheme cluster of its own (the character before it is
///   not a Prepend one, the one after neither Extend, ZWJ nor SpacingMark),
///   and the normalizer rewrites each cluster alone, so the normalized text
///   is the two halves' normalized texts joined, the first one ending in
///   whitespace;
/// - the pre-tokenizer splits there, and Metaspace and the unigram model
///   treat each word alone.
fn next_cut(text: &str, from: usize) -> usize {
    let bytes = text.as_bytes();
    // A space byte is always a whole character in UTF-8.
    (from.max(1)..bytes.len())
        .find(|&i| {
            bytes[i - 1] == b' '
                && text[..i - 1].chars().next_back().is_none_or(never_prepends)
                && text[i..].chars().next().is_some_and(starts_cluster)
        })
        .unwrap_or(text.len())
}

/// Characters outside the blocks holding the Prepend grapheme class
/// (U+0600-U+0D4E and the supplementary Brahmic scripts), which could
/// otherwise join the space that follows into one cluster.
fn never_prepends(c: char) -> bool {
    c < '\u{600}' || ('\u{e00}'..='\u{ffff}').contains(&c)
}

/// Characters that always start a grapheme cluster after a space: ASCII
/// graphics, CJK ideographs and Hangul syllables.
fn starts_cluster(c: char) -> bool {
    c.is_ascii_graphic()
        || ('\u{4e00}'..='\u{9fff}').contains(&c)
        || ('\u{ac00}'..='\u{d7a3}').contains(&c)
}
