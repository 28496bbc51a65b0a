//! Finds tracefs and checks a tracepoint's record layout against what a probe expects.

use std::path::{Path, PathBuf};

/// The usual tracefs mount points, newest first.
const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The mounted tracefs directory, if any.
pub fn find() -> Option<PathBuf> {
    CANDIDATES.iter().map(Path::new).find(|p| p.join("events").is_dir()).map(Path::to_path_buf)
}

/// Checks that the tracepoint's format file places each `(field, offset)` as expected.
pub fn check_layout(tracefs: &Path, category: &str, name: &str, fields: &[(&str, usize)]) -> Result<(), String> {
    let path = tracefs.join("events").join(category).join(name).join("format");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    for (field, want) in fields {
        let found = text.lines().find_map(|line| parse_field(line).filter(|(n, _)| n == field));
        match found {
            Some((_, off)) if off == *want => {}
            Some((_, off)) => {
                return Err(format!("{category}/{name}: field {field} at offset {off}, probe expects {want}"));
            }
            None => return Err(format!("{category}/{name}: no field {field}")),
        }
    }
    Ok(())
}

/// Parses `field:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;` into (name, offset).
fn parse_field(line: &str) -> Option<(String, usize)> {
    let decl = line.trim().strip_prefix("field:")?.split(';').next()?;
    let name = decl.rsplit([' ', '*']).next()?.split('[').next()?.to_owned();
    let offset = line.split("offset:").nth(1)?.split(';').next()?.trim().parse().ok()?;
    Some((name, offset))
}

#[cfg(test)]
mod tests {
    use super::parse_field;

    #[test]
    fn parses_format_lines() {
        assert_eq!(
            parse_field("\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;"),
            Some(("skaddr".to_owned(), 8))
        );
        assert_eq!(
            parse_field("\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;"),
            Some(("saddr_v6".to_owned(), 40))
        );
        assert_eq!(parse_field("name: inet_sock_set_state"), None);
    }
}
