//! Pixel formats and borrowed frame views with signed byte strides.

use crate::error::{Error, Result};

/// Largest accepted width or height, in pixels. Far above any video size a
/// compositor hands over (16K is 15360), low enough that sizes computed from
/// it cannot overflow and a garbage dimension fails before anything is
/// allocated.
pub const MAX_DIMENSION: usize = 1 << 15;

/// How the pixels of a frame are stored. Channels are interleaved in R, G, B
/// (, A) order; multi-byte samples are native-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// 8-bit RGB, 3 bytes per pixel.
    Rgb8,
    /// 8-bit RGBA, 4 bytes per pixel.
    Rgba8,
    /// 16-bit RGBA (`u16`), 8 bytes per pixel.
    Rgba16,
    /// 32-bit float RGBA (`f32`), 16 bytes per pixel.
    Rgba32F,
}

/// The C API's names, which are what callers of either API see in messages.
impl std::fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PixelFormat::Rgb8 => "COGVIDEO_FORMAT_RGB8",
            PixelFormat::Rgba8 => "COGVIDEO_FORMAT_RGBA8",
            PixelFormat::Rgba16 => "COGVIDEO_FORMAT_RGBA16",
            PixelFormat::Rgba32F => "COGVIDEO_FORMAT_RGBA32F",
        })
    }
}

impl PixelFormat {
    /// Channels per pixel (3 or 4).
    pub const fn channels(self) -> usize {
        match self {
            PixelFormat::Rgb8 => 3,
            PixelFormat::Rgba8 | PixelFormat::Rgba16 | PixelFormat::Rgba32F => 4,
        }
    }

    /// Bytes per channel sample (1, 2 or 4).
    pub const fn bytes_per_sample(self) -> usize {
        match self {
            PixelFormat::Rgb8 | PixelFormat::Rgba8 => 1,
            PixelFormat::Rgba16 => 2,
            PixelFormat::Rgba32F => 4,
        }
    }

    pub const fn bytes_per_pixel(self) -> usize {
        self.channels() * self.bytes_per_sample()
    }
}

/// The shape of a frame in memory: size, format and the signed distance in
/// bytes from one row to the next one down. Validated on construction, so
/// every size derived from it fits in `usize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLayout {
    width: usize,
    height: usize,
    format: PixelFormat,
    stride: isize,
}

impl FrameLayout {
    /// A layout with an explicit row stride in bytes. A negative stride means
    /// bottom-up storage: the top row is at the highest address.
    ///
    /// Any stride whose magnitude covers a row is accepted, including odd
    /// ones: samples are read byte-wise, so alignment does not matter.
    pub fn new(width: usize, height: usize, format: PixelFormat, stride: isize) -> Result<Self> {
        check_dimensions("frame", width, height)?;
        let row_bytes = width * format.bytes_per_pixel();
        if stride.unsigned_abs() < row_bytes {
            return Err(Error::invalid(format!(
                "row stride {stride} bytes is smaller than a row of {width} {format:?} pixels \
                 ({row_bytes} bytes)"
            )));
        }
        let layout = FrameLayout {
            width,
            height,
            format,
            stride,
        };
        // The span must be representable so that buffer checks cannot overflow.
        (height - 1)
            .checked_mul(stride.unsigned_abs())
            .and_then(|n| n.checked_add(row_bytes))
            .filter(|&n| n <= isize::MAX as usize)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "a {width}x{height} frame with row stride {stride} spans more bytes than \
                     memory can hold"
                ))
            })?;
        Ok(layout)
    }

    /// A top-down layout with rows packed back to back.
    pub fn packed(width: usize, height: usize, format: PixelFormat) -> Result<Self> {
        check_dimensions("frame", width, height)?;
        // Both factors are bounded by MAX_DIMENSION and 16, so this fits isize.
        let stride = (width * format.bytes_per_pixel()) as isize;
        Self::new(width, height, format, stride)
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn format(&self) -> PixelFormat {
        self.format
    }

    pub fn stride(&self) -> isize {
        self.stride
    }

    /// Bytes of pixel data in one row (without padding).
    pub fn row_bytes(&self) -> usize {
        self.width * self.format.bytes_per_pixel()
    }

    /// Bytes from the lowest-addressed row's first byte to the end of the
    /// highest-addressed row: the smallest buffer that holds the frame.
    pub fn span(&self) -> usize {
        (self.height - 1) * self.stride.unsigned_abs() + self.row_bytes()
    }

    /// Offset of the top row in a buffer of [`span`](Self::span) bytes that
    /// starts at the lowest-addressed row: 0 for top-down frames,
    /// `(height - 1) * |stride|` for bottom-up ones.
    pub fn top_offset(&self) -> usize {
        if self.stride < 0 {
            (self.height - 1) * self.stride.unsigned_abs()
        } else {
            0
        }
    }

    /// Checks that `len` bytes with the top row at `top_offset` hold the frame.
    fn check_buffer(&self, len: usize, top_offset: usize) -> Result<()> {
        if len == 0 {
            return Err(Error::invalid("frame buffer is empty"));
        }
        let lowest = if self.stride < 0 {
            top_offset.checked_sub(self.top_offset()).ok_or_else(|| {
                Error::invalid(format!(
                    "bottom-up frame: top row offset {top_offset} leaves no room for the \
                         {} rows below it (needs at least {})",
                    self.height - 1,
                    self.top_offset()
                ))
            })?
        } else {
            top_offset
        };
        let end = lowest.checked_add(self.span());
        if end.is_none_or(|end| end > len) {
            return Err(Error::invalid(format!(
                "frame buffer of {len} bytes is too short: a {}x{} {} frame with stride {} \
                 needs {} bytes from offset {lowest}",
                self.width,
                self.height,
                self.format,
                self.stride,
                self.span()
            )));
        }
        Ok(())
    }

    /// Byte offset of row `y` (0 = top) given the top row's offset. Only
    /// called on layouts whose buffer passed `check_buffer`.
    fn row_start(&self, top_offset: usize, y: usize) -> usize {
        let step = y * self.stride.unsigned_abs();
        if self.stride < 0 {
            top_offset - step
        } else {
            top_offset + step
        }
    }
}

/// Rejects zero and absurd sizes before anything is sized from them.
pub(crate) fn check_dimensions(what: &str, width: usize, height: usize) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(Error::invalid(format!(
            "{what} size {width}x{height} is empty"
        )));
    }
    if width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(Error::invalid(format!(
            "{what} size {width}x{height} exceeds the maximum of {MAX_DIMENSION} pixels per side"
        )));
    }
    Ok(())
}

/// A read-only frame borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub struct FrameRef<'a> {
    data: &'a [u8],
    top_offset: usize,
    layout: FrameLayout,
}

impl<'a> FrameRef<'a> {
    /// A view of `data`, whose top row starts at byte `top_offset`; row `y`
    /// starts at `top_offset + y * stride` (stride may be negative).
    pub fn new(data: &'a [u8], top_offset: usize, layout: FrameLayout) -> Result<Self> {
        layout.check_buffer(data.len(), top_offset)?;
        Ok(FrameRef {
            data,
            top_offset,
            layout,
        })
    }

    /// A top-down, tightly packed frame.
    pub fn packed(
        data: &'a [u8],
        width: usize,
        height: usize,
        format: PixelFormat,
    ) -> Result<Self> {
        Self::new(data, 0, FrameLayout::packed(width, height, format)?)
    }

    pub fn layout(&self) -> FrameLayout {
        self.layout
    }

    pub fn width(&self) -> usize {
        self.layout.width
    }

    pub fn height(&self) -> usize {
        self.layout.height
    }

    pub fn format(&self) -> PixelFormat {
        self.layout.format
    }

    /// The pixel bytes of row `y` (0 = top), without padding.
    ///
    /// # Panics
    /// If `y >= height`.
    pub fn row(&self, y: usize) -> &'a [u8] {
        assert!(y < self.layout.height, "row {y} out of range");
        let start = self.layout.row_start(self.top_offset, y);
        &self.data[start..start + self.layout.row_bytes()]
    }
}

/// A writable frame borrowed from the caller. Bytes outside the rows' pixel
/// data (stride padding) are never written.
#[derive(Debug)]
pub struct FrameMut<'a> {
    data: &'a mut [u8],
    top_offset: usize,
    layout: FrameLayout,
}

impl<'a> FrameMut<'a> {
    /// A view of `data`, whose top row starts at byte `top_offset`; row `y`
    /// starts at `top_offset + y * stride` (stride may be negative).
    pub fn new(data: &'a mut [u8], top_offset: usize, layout: FrameLayout) -> Result<Self> {
        layout.check_buffer(data.len(), top_offset)?;
        Ok(FrameMut {
            data,
            top_offset,
            layout,
        })
    }

    /// A top-down, tightly packed frame.
    pub fn packed(
        data: &'a mut [u8],
        width: usize,
        height: usize,
        format: PixelFormat,
    ) -> Result<Self> {
        Self::new(data, 0, FrameLayout::packed(width, height, format)?)
    }

    pub fn layout(&self) -> FrameLayout {
        self.layout
    }

    pub fn width(&self) -> usize {
        self.layout.width
    }

    pub fn height(&self) -> usize {
        self.layout.height
    }

    pub fn format(&self) -> PixelFormat {
        self.layout.format
    }

    /// The pixel bytes of row `y` (0 = top), without padding.
    ///
    /// # Panics
    /// If `y >= height`.
    pub fn row(&self, y: usize) -> &[u8] {
        assert!(y < self.layout.height, "row {y} out of range");
        let start = self.layout.row_start(self.top_offset, y);
        &self.data[start..start + self.layout.row_bytes()]
    }

    /// The pixel bytes of row `y` (0 = top), without padding, for writing.
    ///
    /// # Panics
    /// If `y >= height`.
    pub fn row_mut(&mut self, y: usize) -> &mut [u8] {
        assert!(y < self.layout.height, "row {y} out of range");
        let start = self.layout.row_start(self.top_offset, y);
        &mut self.data[start..start + self.layout.row_bytes()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bottom_up_rows_run_towards_lower_addresses() {
        // 2x3 RGB8, stride -8 (2 bytes padding), slice starts at the bottom row.
        let layout = FrameLayout::new(2, 3, PixelFormat::Rgb8, -8).unwrap();
        assert_eq!(layout.span(), 2 * 8 + 6);
        assert_eq!(layout.top_offset(), 16);
        let data: Vec<u8> = (0..layout.span() as u8).collect();
        let frame = FrameRef::new(&data, layout.top_offset(), layout).unwrap();
        assert_eq!(frame.row(0), &data[16..22]);
        assert_eq!(frame.row(1), &data[8..14]);
        assert_eq!(frame.row(2), &data[0..6]);
    }

    #[test]
    fn top_offset_must_leave_room_below() {
        let layout = FrameLayout::new(2, 3, PixelFormat::Rgb8, -6).unwrap();
        let data = [0u8; 64];
        assert!(FrameRef::new(&data, 11, layout).is_err());
        assert!(FrameRef::new(&data, 12, layout).is_ok());
    }

    #[test]
    fn span_overflow_is_an_error() {
        let err = FrameLayout::new(1, 3, PixelFormat::Rgb8, isize::MIN).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(FrameLayout::new(4, 4, PixelFormat::Rgba8, isize::MAX).is_err());
    }
}
