//! Python's `shlex.split`, for `MFA.command` strings and `credential_process` lines.

/// Splits a command line like Python's `shlex.split` (POSIX mode): whitespace separates words,
/// single quotes are literal, double quotes allow `\"` and `\\`, a backslash outside quotes
/// escapes any character. This is how boto3-refresh-session split `MFA.command` strings and how
/// botocore splits `credential_process`.
pub fn shlex_split(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("no closing quotation".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("no closing quotation".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("no closing quotation".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err("no escaped character".into()),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shlex_matches_python() {
        let ok = |s: &str| shlex_split(s).unwrap();
        assert_eq!(ok("a b  c"), ["a", "b", "c"]);
        assert_eq!(ok(r#"a "b c" 'd e'"#), ["a", "b c", "d e"]);
        assert_eq!(ok(r#"a"b c"d"#), ["ab cd"]);
        assert_eq!(ok(r#""a\"b\\c\$""#), [r#"a"b\c\$"#]);
        assert_eq!(ok(r"a\ b"), ["a b"]);
        assert_eq!(ok("a ''"), ["a", ""]);
        assert_eq!(ok("  "), Vec::<String>::new());
        assert!(shlex_split("'a").is_err());
        assert!(shlex_split("a\\").is_err());
    }
}
