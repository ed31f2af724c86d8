//! Pixels as tests see them (top-down, tightly packed RGBA) and as the host
//! lays them out for a plugin (bottom-up OpenFX rows, any row bytes, also
//! negative, with padding the plugin must not touch).

use std::ffi::CStr;

use super::ofx::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    Byte,
    Short,
    Float,
}

impl Depth {
    pub fn bytes(self) -> usize {
        match self {
            Depth::Byte => 1,
            Depth::Short => 2,
            Depth::Float => 4,
        }
    }

    pub fn name(self) -> &'static CStr {
        match self {
            Depth::Byte => kOfxBitDepthByte,
            Depth::Short => kOfxBitDepthShort,
            Depth::Float => kOfxBitDepthFloat,
        }
    }
}

/// A top-down, tightly packed RGBA image (native-endian samples).
#[derive(Clone, Debug, PartialEq)]
pub struct Pixels {
    pub width: usize,
    pub height: usize,
    pub depth: Depth,
    pub data: Vec<u8>,
}

impl Pixels {
    pub fn new(width: usize, height: usize, depth: Depth) -> Pixels {
        Pixels {
            width,
            height,
            depth,
            data: vec![0; width * height * 4 * depth.bytes()],
        }
    }

    /// Sample `i` (row-major, 4 per pixel) as a float (8- and 16-bit as
    /// integers, not normalised).
    pub fn sample(&self, i: usize) -> f64 {
        let b = &self.data;
        match self.depth {
            Depth::Byte => b[i] as f64,
            Depth::Short => u16::from_ne_bytes([b[2 * i], b[2 * i + 1]]) as f64,
            Depth::Float => f32::from_ne_bytes(b[4 * i..4 * i + 4].try_into().unwrap()) as f64,
        }
    }

    pub fn samples(&self) -> usize {
        self.width * self.height * 4
    }
}

/// How the host lays out the rows of the images it gives a plugin.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Rows run towards lower addresses (negative row bytes).
    pub negative: bool,
    /// Bytes after each row's pixels.
    pub padding: usize,
    /// RGB images (three samples a pixel, no alpha) instead of RGBA.
    pub rgb: bool,
}

impl Layout {
    pub const PLAIN: Layout = Layout {
        negative: false,
        padding: 0,
        rgb: false,
    };

    /// Samples a pixel in memory.
    pub fn channels(self) -> usize {
        if self.rgb { 3 } else { 4 }
    }

    pub fn components(self) -> &'static CStr {
        if self.rgb {
            kOfxImageComponentRGB
        } else {
            kOfxImageComponentRGBA
        }
    }
}

/// Filler of padding and of untouched output: a plugin that writes outside
/// its rows, or leaves part of the render window unwritten, shows.
pub const FILL: u8 = 0xA5;

/// An image's memory as the host hands it to a plugin (RGB images hold
/// the RGBA pixels' colour; read back, their alpha is 0).
pub struct Buffer {
    pub width: usize,
    pub height: usize,
    pub depth: Depth,
    pub layout: Layout,
    mem: Vec<u8>,
}

impl Buffer {
    pub fn new(width: usize, height: usize, depth: Depth, layout: Layout) -> Buffer {
        let stride = width * layout.channels() * depth.bytes() + layout.padding;
        Buffer {
            width,
            height,
            depth,
            layout,
            mem: vec![FILL; stride * height],
        }
    }

    pub fn from_pixels(p: &Pixels, layout: Layout) -> Buffer {
        let mut b = Buffer::new(p.width, p.height, p.depth, layout);
        let (px, bx) = (4 * p.depth.bytes(), b.pixel_bytes());
        for r in 0..p.height {
            let off = b.offset_of_top_row(r);
            for x in 0..p.width {
                let from = (r * p.width + x) * px;
                b.mem[off + x * bx..off + (x + 1) * bx].copy_from_slice(&p.data[from..from + bx]);
            }
        }
        b
    }

    fn pixel_bytes(&self) -> usize {
        self.layout.channels() * self.depth.bytes()
    }

    fn stride(&self) -> usize {
        self.width * self.pixel_bytes() + self.layout.padding
    }

    /// Where top-down row `r` starts in memory. OpenFX row y (bottom-up)
    /// lies at `data + y * row_bytes`.
    fn offset_of_top_row(&self, r: usize) -> usize {
        let y = self.height - 1 - r;
        if self.layout.negative {
            (self.height - 1 - y) * self.stride()
        } else {
            y * self.stride()
        }
    }

    pub fn row_bytes(&self) -> isize {
        let s = self.stride() as isize;
        if self.layout.negative { -s } else { s }
    }

    /// `kOfxImagePropData`: the start of row 0 (the bottom row).
    pub fn data(&mut self) -> *mut u8 {
        if self.height == 0 {
            return self.mem.as_mut_ptr();
        }
        let off = self.offset_of_top_row(self.height - 1);
        // SAFETY: inside the allocation.
        unsafe { self.mem.as_mut_ptr().add(off) }
    }

    pub fn to_pixels(&self) -> Pixels {
        let mut p = Pixels::new(self.width, self.height, self.depth);
        let (px, bx) = (4 * self.depth.bytes(), self.pixel_bytes());
        for r in 0..self.height {
            let off = self.offset_of_top_row(r);
            for x in 0..self.width {
                let to = (r * self.width + x) * px;
                p.data[to..to + bx].copy_from_slice(&self.mem[off + x * bx..off + (x + 1) * bx]);
            }
        }
        p
    }

    /// Whether every padding byte still holds `FILL`.
    pub fn padding_intact(&self) -> bool {
        let rb = self.width * self.pixel_bytes();
        (0..self.height).all(|r| {
            let off = self.offset_of_top_row(r) + rb;
            self.mem[off..off + self.layout.padding]
                .iter()
                .all(|&b| b == FILL)
        })
    }
}
