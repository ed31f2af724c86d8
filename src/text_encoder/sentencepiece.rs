//! The parts of a SentencePiece `ModelProto` (`spiece.model`) that the T5
//! tokenizer needs, read with a minimal protobuf decoder.
//!
//! Field numbers (sentencepiece_model.proto): ModelProto.pieces = 1,
//! trainer_spec = 2, normalizer_spec = 3; SentencePiece.piece = 1,
//! score = 2, type = 3; TrainerSpec.model_type = 3;
//! NormalizerSpec.precompiled_charsmap = 2. Every other field is skipped.
//! The normalizer flags (add_dummy_prefix, remove_extra_whitespaces,
//! escape_whitespaces) are not read: transformers 5.x builds T5's whitespace
//! handling the same way whatever they say.

/// SentencePiece's `ModelType.UNIGRAM`, also the proto default.
const UNIGRAM: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl PieceType {
    /// Unknown enum values stay unknown fields in proto2, leaving the
    /// default, NORMAL.
    fn from_proto(v: u64) -> Self {
        match v {
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Normal,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Piece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceType,
}

#[derive(Debug, Clone)]
pub(crate) struct SpmModel {
    pub pieces: Vec<Piece>,
    /// Empty when the model has no normalization rules.
    pub precompiled_charsmap: Vec<u8>,
}

/// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

type ParseResult<T> = std::result::Result<T, String>;

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> ParseResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "truncated: {n} bytes needed at offset {}, {} left",
                    self.pos,
                    self.buf.len() - self.pos
                )
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn varint(&mut self) -> ParseResult<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!(
            "varint longer than 10 bytes at offset {}",
            self.pos
        ))
    }

    /// The next field's number and wire type, or `None` at the end.
    fn field(&mut self) -> ParseResult<Option<(u64, u8)>> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        Ok(Some((key >> 3, (key & 7) as u8)))
    }

    fn len_delimited(&mut self) -> ParseResult<&'a [u8]> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| format!("length {n} too large"))?;
        self.take(n)
    }

    fn fixed32(&mut self) -> ParseResult<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn skip(&mut self, wire: u8) -> ParseResult<()> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.len_delimited().map(drop),
            FIXED32 => self.take(4).map(drop),
            w => Err(format!(
                "unsupported protobuf wire type {w} at offset {}",
                self.pos
            )),
        }
    }

    /// Checks a known field's wire type, so a malformed file is reported
    /// rather than misread.
    fn expect(&self, field: &str, wire: u8, want: u8) -> ParseResult<()> {
        if wire == want {
            Ok(())
        } else {
            Err(format!(
                "field `{field}` has wire type {wire}, expected {want}"
            ))
        }
    }
}

fn parse_piece(buf: &[u8]) -> ParseResult<Piece> {
    let mut r = Reader::new(buf);
    let mut piece = None;
    let mut score = 0.0f32;
    let mut kind = PieceType::Normal;
    while let Some((num, wire)) = r.field()? {
        match num {
            1 => {
                r.expect("piece", wire, LEN)?;
                let bytes = r.len_delimited()?;
                let s =
                    std::str::from_utf8(bytes).map_err(|e| format!("piece is not UTF-8: {e}"))?;
                piece = Some(s.to_string());
            }
            2 => {
                r.expect("score", wire, FIXED32)?;
                score = f32::from_bits(r.fixed32()?);
            }
            3 => {
                r.expect("type", wire, VARINT)?;
                kind = PieceType::from_proto(r.varint()?);
            }
            _ => r.skip(wire)?,
        }
    }
    let piece = piece.ok_or("a piece has no text")?;
    Ok(Piece { piece, score, kind })
}

/// Returns `TrainerSpec.model_type`.
fn parse_trainer_spec(buf: &[u8]) -> ParseResult<u64> {
    let mut r = Reader::new(buf);
    let mut model_type = UNIGRAM;
    while let Some((num, wire)) = r.field()? {
        if num == 3 {
            r.expect("model_type", wire, VARINT)?;
            model_type = r.varint()?;
        } else {
            r.skip(wire)?;
        }
    }
    Ok(model_type)
}

/// Returns `NormalizerSpec.precompiled_charsmap`.
fn parse_normalizer_spec(buf: &[u8]) -> ParseResult<Vec<u8>> {
    let mut r = Reader::new(buf);
    let mut charsmap = Vec::new();
    while let Some((num, wire)) = r.field()? {
        if num == 2 {
            r.expect("precompiled_charsmap", wire, LEN)?;
            charsmap = r.len_delimited()?.to_vec();
        } else {
            r.skip(wire)?;
        }
    }
    Ok(charsmap)
}

/// Decodes `spiece.model`. Only unigram models are accepted: T5's
/// tokenizer scores pieces with the unigram lattice.
pub(crate) fn parse(bytes: &[u8]) -> ParseResult<SpmModel> {
    let mut r = Reader::new(bytes);
    let mut pieces = Vec::new();
    let mut model_type = UNIGRAM;
    let mut precompiled_charsmap = Vec::new();
    while let Some((num, wire)) = r.field()? {
        match num {
            1 => {
                r.expect("pieces", wire, LEN)?;
                let p = parse_piece(r.len_delimited()?)
                    .map_err(|e| format!("piece {}: {e}", pieces.len()))?;
                pieces.push(p);
            }
            2 => {
                r.expect("trainer_spec", wire, LEN)?;
                model_type = parse_trainer_spec(r.len_delimited()?)
                    .map_err(|e| format!("trainer_spec: {e}"))?;
            }
            3 => {
                r.expect("normalizer_spec", wire, LEN)?;
                precompiled_charsmap = parse_normalizer_spec(r.len_delimited()?)
                    .map_err(|e| format!("normalizer_spec: {e}"))?;
            }
            _ => r.skip(wire)?,
        }
    }
    if pieces.is_empty() {
        return Err("no pieces: not a SentencePiece model".into());
    }
    if model_type != UNIGRAM {
        return Err(format!(
            "model_type {model_type} is not UNIGRAM (1); T5 tokenizers are unigram models"
        ));
    }
    Ok(SpmModel {
        pieces,
        precompiled_charsmap,
    })
}

/// Checks a `precompiled_charsmap` (the normalization rules: a
/// little-endian u32 trie size, a darts-clone double-array trie of u32
/// units, then NUL-separated replacement strings) before `spm_precompiled`
/// reads it. That reader reserves the trie before checking its size against
/// the bytes present (a size of `FF FF FF FF` reserves 8 GiB and aborts) and
/// indexes the trie and the strings unchecked while normalizing, so every
/// trie path its lookup can take is walked here and each index it would read
/// checked.
pub(crate) fn check_charsmap(bytes: &[u8]) -> ParseResult<()> {
    let (size, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or("shorter than its 4-byte trie size")?;
    let size = u32::from_le_bytes(*size) as usize;
    if size == 0 || !size.is_multiple_of(4) || size > rest.len() {
        return Err(format!(
            "trie size {size}: expected a non-zero multiple of 4 of at most the {} bytes that follow",
            rest.len()
        ));
    }
    let (trie, strings) = rest.split_at(size);
    let strings = std::str::from_utf8(strings)
        .map_err(|e| format!("replacement strings are not UTF-8: {e}"))?;
    let units: Vec<usize> = trie
        .chunks_exact(4)
        .map(|u| u32::from_le_bytes([u[0], u[1], u[2], u[3]]) as usize)
        .collect();
    // The unit layout `spm_precompiled::DoubleArray` decodes.
    let offset = |u: usize| (u >> 10) << ((u & (1 << 9)) >> 6);
    let has_leaf = |u: usize| (u >> 8) & 1 == 1;
    let label = |u: usize| u & ((1 << 31) | 0xff);
    let value = |u: usize| u & ((1 << 31) - 1);
    let unit = |i: usize| {
        units
            .get(i)
            .copied()
            .ok_or_else(|| format!("trie index {i} is outside its {} units", units.len()))
    };
    let mut seen = std::collections::HashSet::new();
    let mut todo = vec![offset(units[0])];
    while let Some(node) = todo.pop() {
        if !seen.insert(node) {
            continue;
        }
        // The lookup stops at a NUL byte, so labels are 1..=255.
        for byte in 1..=255 {
            let child = unit(node ^ byte)?;
            if label(child) != byte {
                continue;
            }
            let next = node ^ byte ^ offset(child);
            if has_leaf(child) {
                let at = value(unit(next)?);
                if !strings.is_char_boundary(at) {
                    return Err(format!(
                        "replacement offset {at} is not a character boundary of the {} bytes of replacement strings",
                        strings.len()
                    ));
                }
            }
            todo.push(next);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn key(num: u64, wire: u8, out: &mut Vec<u8>) {
        varint(num << 3 | u64::from(wire), out);
    }

    fn bytes_field(num: u64, data: &[u8], out: &mut Vec<u8>) {
        key(num, LEN, out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }

    fn piece(text: &str, score: f32, kind: Option<u64>) -> Vec<u8> {
        let mut p = Vec::new();
        bytes_field(1, text.as_bytes(), &mut p);
        key(2, FIXED32, &mut p);
        p.extend_from_slice(&score.to_bits().to_le_bytes());
        if let Some(k) = kind {
            key(3, VARINT, &mut p);
            varint(k, &mut p);
        }
        p
    }

    fn model(model_type: Option<u64>) -> Vec<u8> {
        let mut m = Vec::new();
        bytes_field(1, &piece("<pad>", 0.0, Some(3)), &mut m);
        bytes_field(1, &piece("<unk>", 0.0, Some(2)), &mut m);
        bytes_field(1, &piece("▁a", -1.5, None), &mut m);
        let mut trainer = Vec::new();
        // vocab_size (4), a field we skip, before model_type
        key(4, VARINT, &mut trainer);
        varint(3, &mut trainer);
        if let Some(t) = model_type {
            key(3, VARINT, &mut trainer);
            varint(t, &mut trainer);
        }
        // unk_piece (45): a multi-byte key that is skipped
        bytes_field(45, b"<unk>", &mut trainer);
        bytes_field(2, &trainer, &mut m);
        let mut norm = Vec::new();
        bytes_field(1, b"nmt_nfkc", &mut norm);
        bytes_field(2, &[1, 2, 3, 4], &mut norm);
        key(3, VARINT, &mut norm);
        varint(1, &mut norm);
        bytes_field(3, &norm, &mut m);
        // an unknown fixed64 field at the top level is skipped
        key(9, FIXED64, &mut m);
        m.extend_from_slice(&[0; 8]);
        m
    }

    #[test]
    fn reads_pieces_scores_types_and_charsmap() {
        let m = parse(&model(Some(1))).unwrap();
        assert_eq!(m.pieces.len(), 3);
        assert_eq!(m.pieces[0].kind, PieceType::Control);
        assert_eq!(m.pieces[1].kind, PieceType::Unknown);
        assert_eq!(m.pieces[2].piece, "▁a");
        assert_eq!(m.pieces[2].score, -1.5);
        assert_eq!(m.pieces[2].kind, PieceType::Normal);
        assert_eq!(m.precompiled_charsmap, vec![1, 2, 3, 4]);
        // model_type absent: the proto default, unigram
        assert!(parse(&model(None)).is_ok());
    }

    #[test]
    fn rejects_bpe_models() {
        let e = parse(&model(Some(2))).unwrap_err();
        assert!(e.contains("UNIGRAM"), "{e}");
    }

    #[test]
    fn truncation_inside_a_field_is_an_error_not_a_panic() {
        let full = model(Some(1));
        // Offsets between top-level fields: a file cut exactly there is a
        // shorter valid message.
        let mut boundaries = vec![0];
        let mut r = Reader::new(&full);
        while let Some((_, wire)) = r.field().unwrap() {
            r.skip(wire).unwrap();
            boundaries.push(r.pos);
        }
        for n in 0..full.len() {
            let res = parse(&full[..n]);
            if !boundaries.contains(&n) {
                let e = res.unwrap_err();
                assert!(e.contains("truncated"), "prefix {n}: {e}");
            }
        }
        assert!(parse(&full[..boundaries[1]]).is_ok());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(b"").is_err());
        assert!(parse(&[0xff; 16]).is_err());
        assert!(parse(b"{\"not\": \"protobuf\"}").is_err());
        // wire type 3 (start group) is not supported
        assert!(parse(&[0x0b]).is_err());
    }
}
