//! The weight layout of wick's CPU kernels: rows in panels of [`PANEL`], repacked once at
//! load so that one 64-byte load holds the same four values of a block for all sixteen rows
//! of a panel, one row per 32-bit lane. A multiply-add instruction then works on sixteen rows
//! at once against four activation bytes broadcast to every lane, and the integer sums need
//! no horizontal reduction. A panel's blocks follow each other in memory, so a thread streams
//! through its panels in one sequential pass (plus the scales beside them).
//!
//! Every format is cut into blocks of 32 values (a K-quant super-block of 256 is eight of
//! them) and each value is stored as an unsigned integer `u`; the format then says how `u`
//! becomes a weight (see [`Format`]). Per panel and 32-value block:
//! - 4-bit part (every format but Q8_0): 4 chunks of 64 bytes; lane `r` of chunk `c` holds
//!   values `4c..4c+4` of row `r` in the low nibbles and values `16+4c..16+4c+4` in the high.
//! - fifth bit (Q5_0, Q5_K): 64 bytes, one 32-bit word per lane whose byte `i` holds bit 4
//!   of value `4c+i` in its bit `c` and of value `16+4c+i` in its bit `4+c` (c = 0..3), so
//!   one shift and a mask put a chunk's fifth bits in place.
//! - bits 4 and 5 (Q6_K): 2 × 64 bytes, words as above with two bits per value: the first
//!   64 bytes for values 0..15 (bits `2c, 2c+1` of byte `i` for value `4c+i`), then 16..31.
//! - Q8_0: 8 chunks of 64 bytes; lane `r` of chunk `g` holds values `4g..4g+4` of row `r`,
//!   stored plus 128 (unsigned, as the AVX-512 VNNI instruction takes them).
//! - Scales beside the values, sixteen per block (or per super-block), in their own arrays:
//!   `d` (f16), `m` (f16: Q4_1's offset, or a K-quant's `dmin` per super-block), `sc`
//!   (K-quant sub-block scales: Q4_K/Q5_K one unsigned byte per block, Q6_K two signed
//!   bytes per block, for values 0..15 and 16..31, row after row) and `mins` (Q4_K/Q5_K).
//!
//! Legacy formats keep GGUF's byte count; the K-quants take 1/8 bit per weight more than
//! GGUF (their 6-bit scales and mins unpacked to bytes, so a kernel reads them directly).

use half::f16;

use super::activation::BLOCK;
use super::buffer::Bytes;
use super::Format;

/// Rows per panel.
pub const PANEL: usize = 16;
/// Bytes of one group of four values across a panel's rows.
pub const GROUP: usize = PANEL * 4;
/// 32-value blocks per K-quant super-block.
pub const SUPER: usize = 8;

/// Why a tensor cannot be repacked.
#[derive(Debug)]
pub struct RepackError(pub String);

impl std::fmt::Display for RepackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RepackError {}

impl Format {
    /// Bytes of one block of a panel's values (4-bit part, then the high bits).
    pub fn panel_block_bytes(self) -> usize {
        match self {
            Format::Q8_0 => PANEL * BLOCK,
            _ => PANEL * BLOCK / 2 + self.high_bits() * PANEL * 4,
        }
    }

    /// Bits each value keeps above its low four (Q8_0 stores whole bytes instead).
    pub fn high_bits(self) -> usize {
        match self {
            Format::Q5_0 | Format::Q5K => 1,
            Format::Q6K => 2,
            _ => 0,
        }
    }

    /// Whether `d` (and `m`) belong to a super-block of [`SUPER`] blocks.
    pub fn super_blocks(self) -> bool {
        matches!(self, Format::Q4K | Format::Q5K | Format::Q6K)
    }

    /// Values and bytes of one GGUF block.
    pub fn gguf_block(self) -> (usize, usize) {
        match self {
            Format::Q4_0 => (32, 18),
            Format::Q4_1 => (32, 20),
            Format::Q5_0 => (32, 22),
            Format::Q8_0 => (32, 34),
            Format::Q4K => (256, 144),
            Format::Q5K => (256, 176),
            Format::Q6K => (256, 210),
        }
    }

    /// `sc` bytes per block and row.
    fn scale_bytes(self) -> usize {
        match self {
            Format::Q4K | Format::Q5K => 1,
            Format::Q6K => 2,
            _ => 0,
        }
    }
}

/// One 32-value block of one row, decoded from GGUF: unsigned values and what scales them.
#[derive(Clone, Copy, Default)]
struct Decoded {
    u: [u8; BLOCK],
    d: u16,
    m: u16,
    sc: [u8; 2],
    min: u8,
}

fn f16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// A K-quant's 6-bit scale and min of sub-block `j` (0..8) from its 12 packed bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Decode one GGUF block into its 32-value blocks (one, or eight for a K-quant).
fn decode(format: Format, raw: &[u8], out: &mut [Decoded]) {
    match format {
        Format::Q4_0 | Format::Q4_1 => {
            let head = if format == Format::Q4_1 { 4 } else { 2 };
            let o = &mut out[0];
            o.d = f16_at(raw, 0);
            if format == Format::Q4_1 {
                o.m = f16_at(raw, 2);
            }
            for (j, &q) in raw[head..head + 16].iter().enumerate() {
                o.u[j] = q & 0x0F;
                o.u[j + 16] = q >> 4;
            }
        }
        Format::Q5_0 => {
            let o = &mut out[0];
            o.d = f16_at(raw, 0);
            let qh = u32::from_le_bytes([raw[2], raw[3], raw[4], raw[5]]);
            for (j, &q) in raw[6..22].iter().enumerate() {
                o.u[j] = (q & 0x0F) | (((qh >> j) & 1) << 4) as u8;
                o.u[j + 16] = (q >> 4) | (((qh >> (j + 16)) & 1) << 4) as u8;
            }
        }
        Format::Q8_0 => {
            let o = &mut out[0];
            o.d = f16_at(raw, 0);
            for (u, &q) in o.u.iter_mut().zip(&raw[2..34]) {
                *u = q ^ 0x80;
            }
        }
        Format::Q4K | Format::Q5K => {
            let (d, dmin, scales) = (f16_at(raw, 0), f16_at(raw, 2), &raw[4..16]);
            let (qh, qs) = if format == Format::Q5K {
                (&raw[16..48], &raw[48..176])
            } else {
                (&[][..], &raw[16..144])
            };
            for (s, o) in out.iter_mut().enumerate().take(SUPER) {
                // Sub-blocks 2i and 2i+1 share 32 bytes: low nibbles, then high nibbles.
                let q = &qs[32 * (s / 2)..][..32];
                let shift = 4 * (s % 2);
                for l in 0..BLOCK {
                    let mut u = (q[l] >> shift) & 0x0F;
                    if !qh.is_empty() {
                        u |= ((qh[l] >> s) & 1) << 4;
                    }
                    o.u[l] = u;
                }
                (o.sc[0], o.min) = scale_min_k4(s, scales);
                o.d = d;
                o.m = dmin;
            }
        }
        Format::Q6K => {
            let (ql, qh, scales, d) = (
                &raw[..128],
                &raw[128..192],
                &raw[192..208],
                f16_at(raw, 208),
            );
            for n in 0..2 {
                let (ql, qh, sc) = (&ql[64 * n..], &qh[32 * n..], &scales[8 * n..]);
                for k in 0..4 {
                    let o = &mut out[4 * n + k];
                    for l in 0..BLOCK {
                        let low = (ql[l + 32 * (k % 2)] >> (4 * (k / 2))) & 0x0F;
                        o.u[l] = low | (((qh[l] >> (2 * k)) & 3) << 4);
                    }
                    o.sc = [sc[2 * k], sc[2 * k + 1]];
                    o.d = d;
                }
            }
        }
    }
}

/// A weight matrix `[rows, blocks * 32]` repacked into panels (rows padded with zero
/// weights to a whole panel).
pub struct Panels {
    format: Format,
    rows: usize,
    blocks: usize,
    /// Panel values, 64-byte aligned so each group is one cache line.
    qs: Bytes,
    d: Vec<u16>,
    m: Vec<u16>,
    sc: Vec<u8>,
    mins: Vec<u8>,
}

/// One panel's view.
#[derive(Clone, Copy)]
pub struct Panel<'a> {
    pub blocks: usize,
    pub qs: &'a [u8],
    pub d: &'a [u16],
    pub m: &'a [u16],
    pub sc: &'a [u8],
    pub mins: &'a [u8],
}

impl Panel<'_> {
    /// The stored unsigned value `j` of row `r`'s block `b` (see the module's layout).
    pub fn value(&self, format: Format, r: usize, b: usize, j: usize) -> i32 {
        let block = &self.qs[b * format.panel_block_bytes()..];
        let (c, i) = ((j % 16) / 4, j % 4);
        if format == Format::Q8_0 {
            return block[(j / 4) * GROUP + r * 4 + i] as i32;
        }
        let byte = block[c * GROUP + r * 4 + i];
        let low = if j < 16 { byte & 0x0F } else { byte >> 4 };
        let high = match format.high_bits() {
            1 => (block[4 * GROUP + r * 4 + i] >> (c + 4 * (j / 16))) & 1,
            2 => (block[(4 + j / 16) * GROUP + r * 4 + i] >> (2 * c)) & 3,
            _ => 0,
        };
        (low | (high << 4)) as i32
    }

    /// Index of the `d`/`m` scales of block `b`, row `r`.
    fn scale_at(format: Format, r: usize, b: usize) -> usize {
        let unit = if format.super_blocks() { b / SUPER } else { b };
        unit * PANEL + r
    }

    pub fn d(&self, format: Format, r: usize, b: usize) -> f32 {
        f16::from_bits(self.d[Self::scale_at(format, r, b)]).to_f32()
    }

    pub fn m(&self, format: Format, r: usize, b: usize) -> f32 {
        f16::from_bits(self.m[Self::scale_at(format, r, b)]).to_f32()
    }

    /// A K-quant's sub-block scale: Q4_K/Q5_K's (`half` ignored), or Q6_K's for values
    /// `16·half..16·half+16`.
    pub fn sc(&self, format: Format, r: usize, b: usize, half: usize) -> i32 {
        match format {
            Format::Q6K => self.sc[(b * PANEL + r) * 2 + half] as i8 as i32,
            _ => self.sc[b * PANEL + r] as i32,
        }
    }

    pub fn min(&self, r: usize, b: usize) -> i32 {
        self.mins[b * PANEL + r] as i32
    }

    /// Weight `j` of row `r`'s block `b`, computed as GGUF's own dequantization does.
    pub fn weight(&self, format: Format, r: usize, b: usize, j: usize) -> f32 {
        let u = self.value(format, r, b, j);
        let d = self.d(format, r, b);
        match format {
            Format::Q4_0 => (u - 8) as f32 * d,
            Format::Q5_0 => (u - 16) as f32 * d,
            Format::Q8_0 => (u - 128) as f32 * d,
            Format::Q4_1 => u as f32 * d + self.m(format, r, b),
            Format::Q4K | Format::Q5K => {
                let scale = d * self.sc(format, r, b, 0) as f32;
                let min = self.m(format, r, b) * self.min(r, b) as f32;
                scale * u as f32 - min
            }
            Format::Q6K => d * self.sc(format, r, b, j / 16) as f32 * (u - 32) as f32,
        }
    }
}

impl Panels {
    /// Repack GGUF blocks (`raw`, row after row) of a `[rows, blocks * 32]` matrix.
    pub fn repack(
        format: Format,
        rows: usize,
        blocks: usize,
        raw: &[u8],
    ) -> Result<Self, RepackError> {
        let (values, bytes) = format.gguf_block();
        let per_gguf = values / BLOCK;
        if !blocks.is_multiple_of(per_gguf) || raw.len() != rows * blocks / per_gguf * bytes {
            return Err(RepackError(format!(
                "unexpected {format:?} data size for {rows} rows of {blocks} blocks"
            )));
        }
        let panels = rows.div_ceil(PANEL);
        let block_bytes = format.panel_block_bytes();
        let units = if format.super_blocks() {
            blocks / SUPER
        } else {
            blocks
        };
        let with_m = matches!(format, Format::Q4_1 | Format::Q4K | Format::Q5K);
        let with_mins = matches!(format, Format::Q4K | Format::Q5K);
        let mut out = Self {
            format,
            rows,
            blocks,
            // Padding rows hold the value 0 (Q8_0 stores it plus 128).
            qs: Bytes::filled(
                panels * blocks * block_bytes,
                if format == Format::Q8_0 { 0x80 } else { 0 },
            ),
            d: vec![0; panels * units * PANEL],
            m: vec![0; if with_m { panels * units * PANEL } else { 0 }],
            sc: vec![0; panels * blocks * PANEL * format.scale_bytes()],
            mins: vec![
                0;
                if with_mins {
                    panels * blocks * PANEL
                } else {
                    0
                }
            ],
        };
        let qs = &mut out.qs;
        let mut decoded = [Decoded::default(); SUPER];
        for (i, raw) in raw.chunks_exact(bytes).enumerate() {
            let row = i / (blocks / per_gguf);
            let first = (i % (blocks / per_gguf)) * per_gguf;
            let (panel, r) = (row / PANEL, row % PANEL);
            decode(format, raw, &mut decoded);
            for (s, dec) in decoded.iter().take(per_gguf).enumerate() {
                let b = first + s;
                let at = panel * blocks + b;
                let unit = if format.super_blocks() { b / SUPER } else { b };
                let scale = (panel * units + unit) * PANEL + r;
                out.d[scale] = dec.d;
                if with_m {
                    out.m[scale] = dec.m;
                }
                match format.scale_bytes() {
                    1 => out.sc[at * PANEL + r] = dec.sc[0],
                    2 => out.sc[(at * PANEL + r) * 2..][..2].copy_from_slice(&dec.sc),
                    _ => {}
                }
                if with_mins {
                    out.mins[at * PANEL + r] = dec.min;
                }
                write_values(
                    format,
                    &dec.u,
                    &mut qs[at * block_bytes..][..block_bytes],
                    r,
                );
            }
        }
        Ok(out)
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

    /// Bytes this matrix holds.
    pub fn bytes(&self) -> usize {
        self.qs.len() + (self.d.len() + self.m.len()) * 2 + self.sc.len() + self.mins.len()
    }

    pub fn panel(&self, i: usize) -> Panel<'_> {
        let nb = self.blocks;
        let bytes = nb * self.format.panel_block_bytes();
        let all = &self.qs[..];
        let units = if self.format.super_blocks() {
            nb / SUPER
        } else {
            nb
        };
        let scales = i * units * PANEL..(i + 1) * units * PANEL;
        let per_block = |v: &[u8], width: usize| -> usize {
            if v.is_empty() {
                0
            } else {
                nb * PANEL * width
            }
        };
        let sc = per_block(&self.sc, self.format.scale_bytes());
        let mins = per_block(&self.mins, 1);
        Panel {
            blocks: nb,
            qs: &all[i * bytes..(i + 1) * bytes],
            d: &self.d[scales.clone()],
            m: if self.m.is_empty() {
                &[]
            } else {
                &self.m[scales]
            },
            sc: &self.sc[i * sc..(i + 1) * sc],
            mins: &self.mins[i * mins..(i + 1) * mins],
        }
    }
}

/// Write row `r`'s 32 unsigned values of one block into the panel block `out`.
fn write_values(format: Format, u: &[u8; BLOCK], out: &mut [u8], r: usize) {
    if format == Format::Q8_0 {
        for (j, &v) in u.iter().enumerate() {
            out[(j / 4) * GROUP + r * 4 + j % 4] = v;
        }
        return;
    }
    for c in 0..4 {
        for i in 0..4 {
            let (lo, hi) = (u[4 * c + i], u[16 + 4 * c + i]);
            out[c * GROUP + r * 4 + i] = (lo & 0x0F) | (hi << 4);
            match format.high_bits() {
                1 => {
                    let bits = ((lo >> 4) & 1) << c | ((hi >> 4) & 1) << (4 + c);
                    out[4 * GROUP + r * 4 + i] |= bits;
                }
                2 => {
                    out[4 * GROUP + r * 4 + i] |= ((lo >> 4) & 3) << (2 * c);
                    out[5 * GROUP + r * 4 + i] |= ((hi >> 4) & 3) << (2 * c);
                }
                _ => {}
            }
        }
    }
}
