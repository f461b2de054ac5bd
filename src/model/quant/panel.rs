//! The weight layout of wick's CPU kernels: rows in panels of [`PANEL`], repacked once at
//! load so that one 64-byte load holds the same four values of a block for all sixteen rows
//! of a panel, one row per 32-bit lane. A multiply-add instruction then works on sixteen rows
//! at once against four activation bytes broadcast to every lane, and the integer sums need
//! no horizontal reduction. A panel's blocks follow each other in memory, so a thread streams
//! through its panels in one sequential pass (plus the scales beside them).
//!
//! Per panel and block:
//! - Q4_1: 4 groups of 64 bytes; lane `r` of group `c` holds GGUF bytes `4c..4c+4` of row
//!   `r`'s block, i.e. values `4c..4c+4` in the low nibbles and `16+4c..16+4c+4` in the high.
//! - Q8_0: 8 groups of 64 bytes; lane `r` of group `g` holds values `4g..4g+4` of row `r`,
//!   stored plus 128 (unsigned, as the AVX-512 VNNI instruction takes them).
//! - Scales `d` (and Q4_1's offsets `m`) as f16, sixteen per block, in their own arrays.
//!
//! The byte count stays GGUF's own (Q4_1 0.625, Q8_0 1.0625 bytes per weight).

use candle_core::Result;
use half::f16;

use super::activation::BLOCK;
use super::Format;

/// Rows per panel.
pub const PANEL: usize = 16;
/// Bytes of one group of four values across a panel's rows.
pub const GROUP: usize = PANEL * 4;

impl Format {
    /// Bytes of one block of a panel's values.
    pub fn panel_block_bytes(self) -> usize {
        match self {
            Format::Q4_1 => PANEL * BLOCK / 2,
            Format::Q8_0 => PANEL * BLOCK,
        }
    }

    /// GGUF block: its header (f16 scale, and Q4_1's f16 offset) and value bytes.
    fn gguf_block(self) -> (usize, usize) {
        match self {
            Format::Q4_1 => (4, 16),
            Format::Q8_0 => (2, 32),
        }
    }
}

/// A cache line, so panel values start on a 64-byte boundary.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A weight matrix `[rows, blocks * 32]` repacked into panels (rows padded with zero
/// weights to a whole panel).
pub struct Panels {
    format: Format,
    rows: usize,
    blocks: usize,
    qs: Vec<Line>,
    d: Vec<u16>,
    /// Q4_1's offsets (empty for Q8_0).
    m: Vec<u16>,
}

/// One panel's view.
#[derive(Clone, Copy)]
pub struct Panel<'a> {
    pub blocks: usize,
    pub qs: &'a [u8],
    pub d: &'a [u16],
    pub m: &'a [u16],
}

impl Panel<'_> {
    /// Value `j` of row `r`'s block `b`, as a signed integer.
    pub fn weight(&self, format: Format, r: usize, b: usize, j: usize) -> i32 {
        let base = b * format.panel_block_bytes() + r * 4 + j % 4;
        match format {
            Format::Q4_1 => {
                let byte = self.qs[base + (j % 16) / 4 * GROUP];
                if j < 16 {
                    (byte & 0x0F) as i32
                } else {
                    (byte >> 4) as i32
                }
            }
            Format::Q8_0 => (self.qs[base + j / 4 * GROUP] ^ 0x80) as i8 as i32,
        }
    }

    pub fn d(&self, r: usize, b: usize) -> f32 {
        f16::from_bits(self.d[b * PANEL + r]).to_f32()
    }

    pub fn m(&self, r: usize, b: usize) -> f32 {
        f16::from_bits(self.m[b * PANEL + r]).to_f32()
    }
}

impl Panels {
    /// Repack GGUF blocks (`raw`, row after row) of a `[rows, blocks * 32]` matrix.
    pub fn repack(format: Format, rows: usize, blocks: usize, raw: &[u8]) -> Result<Self> {
        let (header, body) = format.gguf_block();
        if raw.len() != rows * blocks * (header + body) {
            candle_core::bail!(
                "unexpected {format:?} data size for {rows} rows of {blocks} blocks"
            );
        }
        let panels = rows.div_ceil(PANEL);
        let block_bytes = format.panel_block_bytes();
        let mut qs = vec![Line([0; 64]); panels * blocks * block_bytes / 64];
        let mut d = vec![0u16; panels * blocks * PANEL];
        let mut m = vec![0u16; if format == Format::Q4_1 { d.len() } else { 0 }];
        // SAFETY: `Line` is 64 plain bytes; the view covers exactly the vector's storage.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(qs.as_mut_ptr() as *mut u8, qs.len() * 64) };
        if format == Format::Q8_0 {
            // Padding rows hold the value 0 too.
            bytes.fill(0x80);
        }
        for (i, block) in raw.chunks_exact(header + body).enumerate() {
            let (row, b) = (i / blocks, i % blocks);
            let (panel, lane) = (row / PANEL, row % PANEL);
            let scale = (panel * blocks + b) * PANEL + lane;
            d[scale] = u16::from_le_bytes([block[0], block[1]]);
            if format == Format::Q4_1 {
                m[scale] = u16::from_le_bytes([block[2], block[3]]);
            }
            let out = (panel * blocks + b) * block_bytes + lane * 4;
            for (g, four) in block[header..].chunks_exact(4).enumerate() {
                let dst = &mut bytes[out + g * GROUP..][..4];
                match format {
                    Format::Q4_1 => dst.copy_from_slice(four),
                    Format::Q8_0 => {
                        for (o, v) in dst.iter_mut().zip(four) {
                            *o = v ^ 0x80;
                        }
                    }
                }
            }
        }
        Ok(Self {
            format,
            rows,
            blocks,
            qs,
            d,
            m,
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn blocks(&self) -> usize {
        self.blocks
    }

    pub fn panels(&self) -> usize {
        self.rows.div_ceil(PANEL)
    }

    pub fn panel(&self, i: usize) -> Panel<'_> {
        let nb = self.blocks;
        let bytes = nb * self.format.panel_block_bytes();
        // SAFETY: `Line` is 64 plain bytes.
        let all = unsafe {
            std::slice::from_raw_parts(self.qs.as_ptr() as *const u8, self.qs.len() * 64)
        };
        let scales = i * nb * PANEL..(i + 1) * nb * PANEL;
        Panel {
            blocks: nb,
            qs: &all[i * bytes..(i + 1) * bytes],
            d: &self.d[scales.clone()],
            m: if self.m.is_empty() {
                &[]
            } else {
                &self.m[scales]
            },
        }
    }

    /// Matrices that share an input as one (rows of the first, then the next...), when
    /// their formats and widths agree and each fills whole panels.
    pub fn stack(parts: &[&Panels]) -> Option<Panels> {
        let first = parts.first()?;
        if parts
            .iter()
            .any(|p| p.format != first.format || p.blocks != first.blocks || p.rows % PANEL != 0)
        {
            return None;
        }
        Some(Panels {
            format: first.format,
            rows: parts.iter().map(|p| p.rows).sum(),
            blocks: first.blocks,
            qs: parts.iter().flat_map(|p| p.qs.iter().copied()).collect(),
            d: parts.iter().flat_map(|p| p.d.iter().copied()).collect(),
            m: parts.iter().flat_map(|p| p.m.iter().copied()).collect(),
        })
    }
}
