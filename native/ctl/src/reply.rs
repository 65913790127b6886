//! The agent's reply line: `<exit code> <JSON>\n` (ikeshim/agent/wire.py).

/// (exit code, the JSON text) or None for anything else: the caller treats that as exit 3.
pub fn parse(buf: &[u8]) -> Option<(u8, &str)> {
    let text = std::str::from_utf8(buf).ok()?;
    let line = text.strip_suffix('\n')?;
    if line.contains('\n') {
        return None;
    }
    let (code, body) = line.split_once(' ')?;
    if code.is_empty() || code.len() > 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code: u8 = code.parse().ok()?;
    body.starts_with('{').then_some((code, body))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn replies() {
        assert_eq!(
            parse(b"0 {\"outcome\":\"resumed\"}\n"),
            Some((0, "{\"outcome\":\"resumed\"}"))
        );
        assert_eq!(parse(b"3 {}\n"), Some((3, "{}")));
        for bad in [
            &b""[..],
            b"0 {}",
            b"0 {}\n0 {}\n",
            b"256 {}\n",
            b"-1 {}\n",
            b"x {}\n",
            b"0 nope\n",
            b"\xff {}\n",
            b" {}\n",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
