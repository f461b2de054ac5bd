//! The catalog as a table, for `wick models`.

use super::{Catalog, ModelStore};

/// One line per model: id (the default marked `*`), family, tier, context, size, and
/// where its file is when it is on disk. Ends with a newline.
pub fn print_catalog(catalog: &Catalog, store: &ModelStore) -> String {
    let header = ["ID", "FAMILY", "TIER", "CONTEXT", "SIZE", "ON DISK"];
    let mut rows: Vec<[String; 6]> = vec![header.map(String::from)];
    for entry in &catalog.models {
        let id = if entry.id == catalog.default {
            format!("{} *", entry.id)
        } else {
            entry.id.clone()
        };
        let on_disk = match (&entry.upstream, store.locate(catalog, entry)) {
            (Some(_), _) => "upstream".to_string(),
            (None, Some(path)) => path.display().to_string(),
            (None, None) => "no".to_string(),
        };
        rows.push([
            id,
            entry.family.clone(),
            entry.tier.clone(),
            entry.context_length.to_string(),
            entry.size.map(human_size).unwrap_or_else(|| "?".into()),
            on_disk,
        ]);
    }

    let mut widths = [0usize; 6];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            // Numbers read best right-aligned.
            if i == 3 || i == 4 {
                line.push_str(&format!("{cell:>width$}"));
            } else {
                line.push_str(&format!("{cell:<width$}"));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push_str(&format!(
        "* default; cache: {}\n",
        store.cache_dir().display()
    ));
    out
}

/// Bytes in decimal units, as download tools show them.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1000.0 {
            break;
        }
        value /= 1000.0;
        unit = u;
    }
    format!("{value:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_download_tools() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(98_362_432), "98.4 MB");
        assert_eq!(human_size(1_117_320_768), "1.1 GB");
    }
}
