//! Where the rows of a `[rows, width]` tensor lie in its storage: the kernels and their CPU
//! references take any such matrix whose rows are contiguous, a narrowed view included (the
//! q and k columns of a stacked qkv projection, say).

use candle_core::{bail, Layout, Result};

#[derive(Debug, Clone, Copy)]
pub struct Rows {
    pub rows: usize,
    pub width: usize,
    /// Elements from one row's start to the next.
    pub stride: usize,
    /// The first element of the first row, in the storage.
    pub start: usize,
}

impl Rows {
    pub fn of(layout: &Layout, what: &str) -> Result<Self> {
        let &[rows, width] = layout.dims() else {
            bail!(
                "{what} must be a matrix [rows, width], not {:?}",
                layout.dims()
            );
        };
        let &[stride, step] = layout.stride() else {
            unreachable!("a rank-2 layout has two strides")
        };
        if width > 1 && step != 1 {
            bail!("{what}: each row must be contiguous (strides {stride}, {step})");
        }
        // A single row's stride can be anything; any value ≥ width describes it.
        let stride = if rows <= 1 { width } else { stride };
        if stride < width {
            bail!("{what}: rows overlap (stride {stride} < width {width})");
        }
        Ok(Self {
            rows,
            width,
            stride,
            start: layout.start_offset(),
        })
    }

    /// A contiguous tensor of any rank as one row (for kernels that take it whole).
    pub fn of_contiguous(layout: &Layout) -> Self {
        let width = layout.shape().elem_count();
        Self {
            rows: 1,
            width,
            stride: width,
            start: layout.start_offset(),
        }
    }

    /// One past the last element of the last row.
    pub fn end(&self) -> usize {
        match self.rows {
            0 => self.start,
            n => self.start + (n - 1) * self.stride + self.width,
        }
    }

    /// The storage range `row` occupies.
    pub fn range(&self, row: usize) -> std::ops::Range<usize> {
        let start = self.start + row * self.stride;
        start..start + self.width
    }
}
