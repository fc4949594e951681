//! Plain aligned columns (like `kubectl get`): an upper-case header, cells padded to the
//! widest in their column, two spaces between columns, no trailing blanks.

/// Rows of cells under a header.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_uppercase()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells print empty, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) -> &mut Table {
        self.rows.push(cells);
        self
    }

    /// The table as lines ending in `\n`.
    pub fn render(&self) -> String {
        let cols = self.header.len();
        let cell = |row: &[String], c: usize| row.get(c).cloned().unwrap_or_default();
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .map(|r| cell(r, c).chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (c, width) in widths.iter().enumerate() {
                let text = cell(row, c);
                if c > 0 {
                    line.push_str("  ");
                }
                line.push_str(&text);
                line.extend(std::iter::repeat_n(
                    ' ',
                    width.saturating_sub(text.chars().count()),
                ));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Key/value lines with the keys padded to one width.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}").trim_end().to_owned() + "\n")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_have_no_trailing_blanks() {
        let mut t = Table::new(&["name", "ip", "state"]);
        t.row(vec!["b1".into(), "198.18.0.10".into(), "up".into()])
            .row(vec!["backend-two".into(), "198.18.0.11".into()]);
        assert_eq!(
            t.render(),
            "NAME         IP           STATE\n\
             b1           198.18.0.10  up\n\
             backend-two  198.18.0.11\n"
        );
    }

    #[test]
    fn fields_pad_keys() {
        assert_eq!(
            fields(&[("leader", "1".into()), ("vip owner", "2".into())]),
            "leader     1\nvip owner  2\n"
        );
    }
}
