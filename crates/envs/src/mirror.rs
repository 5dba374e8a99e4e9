//! Which Debian mirror debootstrap uses: the one this machine's apt already uses for the suite
//! (read from `/etc/apt/sources.list` and `sources.list.d/`, one-line and deb822 formats), so
//! nothing names a mirror in code.

use std::path::Path;

/// Finds the first `deb` source for `suite` in the apt configuration under `etc_apt`
/// (normally `/etc/apt`). Files that end in anything but `.list`/`.sources` are ignored (apt
/// ignores `*.disabled` too).
pub fn from_apt_sources(etc_apt: &Path, suite: &str) -> Option<String> {
    let mut texts = Vec::new();
    if let Ok(text) = std::fs::read_to_string(etc_apt.join("sources.list")) {
        texts.push((false, text));
    }
    if let Ok(entries) = std::fs::read_dir(etc_apt.join("sources.list.d")) {
        let mut paths: Vec<_> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        paths.sort();
        for path in paths {
            let deb822 = match path.extension().and_then(|e| e.to_str()) {
                Some("list") => false,
                Some("sources") => true,
                _ => continue,
            };
            if let Ok(text) = std::fs::read_to_string(&path) {
                texts.push((deb822, text));
            }
        }
    }
    texts.iter().find_map(|(deb822, text)| {
        if *deb822 {
            find_in_deb822(text, suite)
        } else {
            find_in_one_line(text, suite)
        }
    })
}

/// `deb [options] URI SUITE COMPONENT…` lines.
fn find_in_one_line(text: &str, suite: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next()?.trim();
        let rest = line.strip_prefix("deb ")?.trim_start();
        let rest = match rest.strip_prefix('[') {
            Some(options) => options.split_once(']')?.1,
            None => rest,
        };
        let mut words = rest.split_whitespace();
        let uri = words.next()?;
        (words.next()? == suite).then(|| uri.to_owned())
    })
}

/// Stanzas of `Types:`, `URIs:`, `Suites:` fields separated by blank lines.
fn find_in_deb822(text: &str, suite: &str) -> Option<String> {
    let mut stanzas = vec![Vec::new()];
    for line in text.lines() {
        if line.trim().is_empty() {
            stanzas.push(Vec::new());
        } else if !line.trim_start().starts_with('#') {
            if let Some(stanza) = stanzas.last_mut() {
                stanza.push(line);
            }
        }
    }
    stanzas.iter().find_map(|stanza| {
        let field = |name: &str| {
            stanza.iter().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
        };
        let enabled = field("Enabled").as_deref() != Some("no");
        let is_deb = field("Types")?.split_whitespace().any(|t| t == "deb");
        let has_suite = field("Suites")?.split_whitespace().any(|s| s == suite);
        (enabled && is_deb && has_suite)
            .then(|| field("URIs"))
            .flatten()
            .and_then(|uris| uris.split_whitespace().next().map(str::to_owned))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_line_and_deb822_sources() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("sources.list.d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(
            d.join("a.sources"),
            "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n\
             Types: deb deb-src\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n",
        )
        .unwrap();
        std::fs::write(
            d.join("b.list.disabled"),
            "deb http://other.example/x bookworm main\n",
        )
        .unwrap();
        assert_eq!(
            from_apt_sources(dir.path(), "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(from_apt_sources(dir.path(), "trixie"), None);
        std::fs::write(
            dir.path().join("sources.list"),
            "# deb http://old.example/debian trixie main\ndeb [arch=amd64] http://one.example/debian trixie main\n",
        )
        .unwrap();
        assert_eq!(
            from_apt_sources(dir.path(), "trixie").as_deref(),
            Some("http://one.example/debian")
        );
    }
}
