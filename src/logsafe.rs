//! Text from a message made safe for one log line: newlines, control characters
//! and other invisible characters become escapes, so mail cannot forge or split
//! log lines.

use std::fmt;

/// Displays a string with `\n`, `\r`, `\t`, `\\` escaped, other control and
/// non-printable characters as `\xNN` (ASCII) or `\u{NNNN}`, at most `max` bytes
/// of the input (then `...`).
#[derive(Clone, Copy)]
pub struct Escaped<'a> {
    text: &'a str,
    max: usize,
}

/// Message-derived text beyond this is cut in the log.
pub const MAX_LOGGED: usize = 2048;

/// `text`, escaped, at most [`MAX_LOGGED`] bytes of it.
pub fn esc(text: &str) -> Escaped<'_> {
    Escaped {
        text,
        max: MAX_LOGGED,
    }
}

impl<'a> Escaped<'a> {
    pub fn with_max(text: &'a str, max: usize) -> Self {
        Self { text, max }
    }
}

/// Characters that render as nothing or move text: bidi controls, zero-width
/// characters, line and paragraph separators.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{200b}'..='\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}'
        | '\u{feff}'
        | '\u{fff9}'..='\u{fffb}')
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Runs of plain characters are written whole; only what needs escaping is
        // written on its own.
        let text = self.text;
        let mut run = 0;
        for (i, c) in text.char_indices() {
            if i >= self.max {
                f.write_str(&text[run..i])?;
                return f.write_str("...");
            }
            let plain = !(c == '\\' || c.is_control() || invisible(c));
            if plain {
                continue;
            }
            f.write_str(&text[run..i])?;
            run = i + c.len_utf8();
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\\' => f.write_str("\\\\")?,
                c if c.is_ascii_control() => write!(f, "\\x{:02x}", c as u32)?,
                c => write!(f, "\\u{{{:04x}}}", c as u32)?,
            }
        }
        f.write_str(&text[run..])
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_always() {
        let evil = "a\nMar  1 00:00:00 host backscatter: forged\r\x1b[31m\x00\u{202e}\u{85}\\";
        let s = esc(evil).to_string();
        assert!(!s.chars().any(|c| c.is_control()), "{s:?}");
        assert_eq!(
            s,
            "a\\nMar  1 00:00:00 host backscatter: forged\\r\\x1b[31m\\x00\\u{202e}\\u{0085}\\\\"
        );
        // Printable text, also outside ASCII, is kept.
        assert_eq!(
            esc("Grüße, <a@b.example>").to_string(),
            "Grüße, <a@b.example>"
        );
    }

    #[test]
    fn long_text_is_cut() {
        let s = Escaped::with_max(&"x".repeat(100), 10).to_string();
        assert_eq!(s, format!("{}...", "x".repeat(10)));
        let s = Escaped::with_max("ééé", 3).to_string();
        assert_eq!(s, "éé...");
    }
}
