//! Escaping of strings that come from outside (comm and paths from the kernel or /proc, file
//! names in reports): any byte outside printable ASCII, and the backslash, becomes `\xNN`, so
//! logs, reports and JSON show exactly what was there, and no name can forge a log or report
//! line or a terminal escape.

use std::fmt::Write as _;

/// Escapes raw bytes for logs and JSON.
pub fn escape_bytes(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for &b in raw {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Escapes a path for logs and reports.
pub fn escape_path(path: &std::path::Path) -> String {
    escape_bytes(path.as_os_str().as_encoded_bytes())
}

#[cfg(test)]
mod tests {
    use super::escape_bytes;

    #[test]
    fn escapes_control_non_ascii_and_backslash() {
        assert_eq!(escape_bytes(b"nginx"), "nginx");
        assert_eq!(escape_bytes(b"a\nb"), "a\\x0ab");
        assert_eq!(escape_bytes(b"\x1b[31m"), "\\x1b[31m");
        assert_eq!(escape_bytes("é".as_bytes()), "\\xc3\\xa9");
        assert_eq!(escape_bytes(b"a\\x41"), "a\\x5cx41");
    }
}
