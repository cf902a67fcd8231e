//! `OIDC_GROUP_NAME_PATTERN`: case-sensitive shell wildcards over group names, with
//! the meaning of Python's `fnmatch.fnmatchcase` (what mlflow-oidc-auth uses):
//! `*` any run of characters, `?` one character, `[abc]` / `[a-z]` one of a set,
//! `[!abc]` one not in it. A `[` without a closing `]` is a literal `[`; a `]` right
//! after `[` or `[!` belongs to the set.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyOne,
    AnyRun,
    Set {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// One compiled pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct GroupPattern {
    text: String,
    tokens: Vec<Token>,
}

impl fmt::Debug for GroupPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl fmt::Display for GroupPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl GroupPattern {
    /// Compiles a pattern; every string is a valid pattern.
    pub fn new(text: &str) -> Self {
        let chars: Vec<char> = text.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    // Runs of `*` mean the same as one.
                    if tokens.last() != Some(&Token::AnyRun) {
                        tokens.push(Token::AnyRun);
                    }
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::AnyOne);
                    i += 1;
                }
                '[' => match parse_set(&chars, i) {
                    Some((token, next)) => {
                        tokens.push(token);
                        i = next;
                    }
                    None => {
                        tokens.push(Token::Literal('['));
                        i += 1;
                    }
                },
                c => {
                    tokens.push(Token::Literal(c));
                    i += 1;
                }
            }
        }
        GroupPattern {
            text: text.to_string(),
            tokens,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the pattern admits every group name (`*`, `**`, ...).
    pub fn matches_everything(&self) -> bool {
        self.tokens == [Token::AnyRun]
    }

    /// Whether `name` matches, case-sensitively, as a whole.
    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        let tokens = &self.tokens;
        // Greedy matching with backtracking to the last `*` only: O(len(name) * len(pattern)).
        let (mut t, mut n) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            match tokens.get(t) {
                Some(Token::AnyRun) => {
                    star = Some((t, n));
                    t += 1;
                    continue;
                }
                Some(token) if one(token, name[n]) => {
                    t += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
            match star {
                Some((st, sn)) => {
                    // Let the last `*` take one more character and retry.
                    t = st + 1;
                    n = sn + 1;
                    star = Some((st, sn + 1));
                }
                None => return false,
            }
        }
        tokens[t..].iter().all(|token| *token == Token::AnyRun)
    }
}

/// Whether a single-character token matches `c`.
fn one(token: &Token, c: char) -> bool {
    match token {
        Token::Literal(l) => *l == c,
        Token::AnyOne => true,
        Token::AnyRun => false,
        Token::Set { negated, ranges } => {
            ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi) != *negated
        }
    }
}

/// The set starting at `chars[open] == '['`, and the index after its `]`; None when
/// it has no closing `]` (then the `[` is literal), as in `fnmatch.translate`.
fn parse_set(chars: &[char], open: usize) -> Option<(Token, usize)> {
    let mut j = open + 1;
    if chars.get(j) == Some(&'!') {
        j += 1;
    }
    if chars.get(j) == Some(&']') {
        j += 1;
    }
    while j < chars.len() && chars[j] != ']' {
        j += 1;
    }
    if j >= chars.len() {
        return None;
    }
    let mut body = &chars[open + 1..j];
    let negated = body.first() == Some(&'!');
    if negated {
        body = &body[1..];
    }
    let mut ranges = Vec::new();
    let mut k = 0;
    while k < body.len() {
        if k + 2 < body.len() && body[k + 1] == '-' {
            // `z-a` is an empty range: it matches nothing, as in Python.
            ranges.push((body[k], body[k + 2]));
            k += 3;
        } else {
            ranges.push((body[k], body[k]));
            k += 1;
        }
    }
    Some((Token::Set { negated, ranges }, j + 1))
}

/// The first pattern that `group` matches.
pub fn first_match<'a>(patterns: &'a [GroupPattern], group: &str) -> Option<&'a GroupPattern> {
    patterns.iter().find(|p| p.matches(group))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, name: &str) -> bool {
        GroupPattern::new(pattern).matches(name)
    }

    #[test]
    fn star() {
        assert!(m("team-*", "team-a"));
        assert!(m("team-*", "team-"));
        assert!(m("team-*", "team-data-science"));
        assert!(!m("team-*", "teams-a"));
        assert!(!m("team-*", "my-team-a"));
        assert!(m("*-admins", "ml-admins"));
        assert!(m("*a*b*", "xxaxxbxx"));
        assert!(!m("*a*b*", "xxbxxaxx"));
        assert!(m("a**b", "ab"));
        assert!(m("*", ""));
        assert!(m("*", "anything at all"));
        assert!(!m("", "x"));
        assert!(m("", ""));
    }

    #[test]
    fn question_mark_is_one_character() {
        assert!(m("team-?", "team-a"));
        assert!(m("team-?", "team-é"));
        assert!(!m("team-?", "team-"));
        assert!(!m("team-?", "team-ab"));
        assert!(m("??", "ab"));
    }

    #[test]
    fn sets_and_ranges() {
        assert!(m("[ab]x", "ax"));
        assert!(m("[ab]x", "bx"));
        assert!(!m("[ab]x", "cx"));
        assert!(!m("[ab]x", "abx"));
        assert!(m("g[0-9]", "g7"));
        assert!(!m("g[0-9]", "gx"));
        assert!(m("g[!0-9]", "gx"));
        assert!(!m("g[!0-9]", "g7"));
        // `]` first in a set is a member; `-` first or last is literal.
        assert!(m("[]a]", "]"));
        assert!(m("[!]a]", "b"));
        assert!(!m("[!]a]", "]"));
        assert!(m("[-a]", "-"));
        assert!(m("[a-]", "-"));
        // An empty range matches nothing; an unclosed `[` is literal.
        assert!(!m("[z-a]", "m"));
        assert!(m("team[", "team["));
        assert!(m("[!", "[!"));
        assert!(!m("team[", "teamx"));
    }

    #[test]
    fn no_match_and_case() {
        assert!(!m("mlflow-*", "other"));
        assert!(!m("mlflow-*", "MLflow-team"));
        assert!(!m("Team-*", "team-a"));
        assert!(m("Team-*", "Team-a"));
        // Special characters of regular expressions are plain here.
        assert!(m("a.b+c", "a.b+c"));
        assert!(!m("a.b", "axb"));
    }

    #[test]
    fn matches_everything() {
        assert!(GroupPattern::new("*").matches_everything());
        assert!(GroupPattern::new("***").matches_everything());
        assert!(!GroupPattern::new("*-x").matches_everything());
        assert!(!GroupPattern::new("?*").matches_everything());
        let patterns = vec![GroupPattern::new("a-*"), GroupPattern::new("b-*")];
        assert_eq!(
            first_match(&patterns, "b-1").map(|p| p.as_str()),
            Some("b-*")
        );
        assert!(first_match(&patterns, "c-1").is_none());
    }
}
