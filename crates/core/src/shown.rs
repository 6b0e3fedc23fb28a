//! Values from peers in log events, shown so that they cannot forge log lines.
//!
//! A client chooses its identifier, its topics and its filters: any UTF-8 but NUL. Written
//! into a log as they are, a line feed in one would end the event and start a line of the
//! client's making (the log subscriber escapes terminal escape sequences, not line breaks).
//! Every event at info and above that shows such text goes through [`Text`].

use std::fmt;
use std::net::SocketAddr;

/// A peer's address in logs: the address, or `unknown` for a listener that gives none.
pub(crate) struct Shown(pub(crate) Option<SocketAddr>);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

/// Text a peer chose, with line breaks, other control and unprintable characters and
/// backslashes escaped as Rust writes them (`\n`, `\u{1b}`, `\\`); the rest as it is.
pub(crate) struct Text<'a>(pub(crate) &'a str);

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for c in self.0.chars() {
            match c {
                // Quotes need no escaping: the text is not inside quotes.
                '"' | '\'' => f.write_char(c)?,
                c => write!(f, "{}", c.escape_debug())?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Text;

    #[test]
    fn line_breaks_and_control_characters_are_escaped() {
        let shown = Text("a\nINFO forged\r\u{1b}[31m\\ \"é\" \u{2028}").to_string();
        assert_eq!(shown, "a\\nINFO forged\\r\\u{1b}[31m\\\\ \"é\" \\u{2028}");
        assert!(!shown.contains('\n') && !shown.contains('\r'));
    }
}
