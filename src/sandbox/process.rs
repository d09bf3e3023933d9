//! What to exec, as whom, with which environment: Docker's rules for ENTRYPOINT/CMD,
//! Env, and User, all pure functions of the image config and the user's overrides.

use crate::image::oci::ContainerConfig;

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProcessError {
    #[error("no command: the image has no Entrypoint or Cmd and none was given")]
    NoCommand,
    #[error("--entrypoint {0:?}: unbalanced quote")]
    Quote(String),
    #[error("user {0:?} not found in the image's /etc/passwd")]
    NoSuchUser(String),
    #[error("group {0:?} not found in the image's /etc/group")]
    NoSuchGroup(String),
    #[error("--env {0:?}: expected KEY=VALUE or KEY")]
    Env(String),
}

/// Docker's rule: `--entrypoint` replaces the image's Entrypoint and drops its Cmd;
/// arguments after the image (or `--`) replace Cmd.
pub fn command(
    image: &ContainerConfig,
    entrypoint: Option<&str>,
    args: &[String],
) -> Result<Vec<String>, ProcessError> {
    let (entry, image_cmd) = match entrypoint {
        Some(e) => (split_words(e)?, Vec::new()),
        None => (
            image.entrypoint.clone().unwrap_or_default(),
            image.cmd.clone().unwrap_or_default(),
        ),
    };
    let cmd = if args.is_empty() { image_cmd } else { args.to_vec() };
    let argv: Vec<String> = entry.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(ProcessError::NoCommand);
    }
    Ok(argv)
}

/// Splits "CMD ARGS" like a shell would for words: whitespace separates, single and
/// double quotes group, backslash escapes outside single quotes.
pub fn split_words(s: &str) -> Result<Vec<String>, ProcessError> {
    let mut words = Vec::new();
    let mut cur: Option<String> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(cur.take()),
            '\'' => {
                let w = cur.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err(ProcessError::Quote(s.into())),
                    }
                }
            }
            '"' => {
                let w = cur.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => w.extend(chars.next()),
                        Some(c) => w.push(c),
                        None => return Err(ProcessError::Quote(s.into())),
                    }
                }
            }
            '\\' => cur.get_or_insert_with(String::new).extend(chars.next()),
            c => cur.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(cur);
    Ok(words)
}

/// The image's Env, then each `--env` (KEY=VALUE sets, a bare KEY takes the value from
/// petri's own environment, as Docker does); PATH defaults when the image sets none.
pub fn environment(image: &ContainerConfig, overrides: &[String], hostname: &str) -> Result<Vec<String>, ProcessError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(key, _)| key == k) {
        Some(slot) => slot.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    set("PATH", DEFAULT_PATH);
    set("HOSTNAME", hostname);
    for kv in image.env.iter().flatten() {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(k, v);
    }
    for kv in overrides {
        match kv.split_once('=') {
            Some(("", _)) => return Err(ProcessError::Env(kv.clone())),
            Some((k, v)) => set(k, v),
            None if kv.is_empty() => return Err(ProcessError::Env(kv.clone())),
            None => {
                if let Ok(v) = std::env::var(kv) {
                    set(kv, &v);
                }
            }
        }
    }
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// Who the process runs as.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

/// Resolves `user` ("name", "uid", "name:group", "uid:gid", empty = root) against the
/// image's /etc/passwd and /etc/group, with supplementary groups from /etc/group.
pub fn resolve_user(user: &str, passwd: &str, group: &str) -> Result<User, ProcessError> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let entry = passwd
        .lines()
        .filter_map(parse_passwd)
        .find(|p| p.0 == u || u.parse() == Ok(p.1));
    let (name, uid, mut gid, home) = match (entry, u.parse::<u32>()) {
        (Some((n, uid, gid, home)), _) => (Some(n), uid, gid, home.to_string()),
        (None, Ok(uid)) => (None, uid, 0, "/".to_string()),
        (None, Err(_)) => return Err(ProcessError::NoSuchUser(u.into())),
    };
    let groups: Vec<(&str, u32, Vec<&str>)> = group.lines().filter_map(parse_group).collect();
    if let Some(g) = g {
        gid = match (
            groups.iter().find(|e| e.0 == g || g.parse() == Ok(e.1)),
            g.parse::<u32>(),
        ) {
            (Some(e), _) => e.1,
            (None, Ok(n)) => n,
            (None, Err(_)) => return Err(ProcessError::NoSuchGroup(g.into())),
        };
    }
    let mut supplementary = vec![gid];
    if let Some(name) = name {
        for (_, id, members) in &groups {
            if members.contains(&name) && !supplementary.contains(id) {
                supplementary.push(*id);
            }
        }
    }
    Ok(User {
        uid,
        gid,
        groups: supplementary,
        home,
    })
}

fn parse_passwd(line: &str) -> Option<(&str, u32, u32, &str)> {
    let f: Vec<&str> = line.split(':').collect();
    (f.len() >= 7).then_some(())?;
    Some((f[0], f[2].parse().ok()?, f[3].parse().ok()?, f[5]))
}

fn parse_group(line: &str) -> Option<(&str, u32, Vec<&str>)> {
    let f: Vec<&str> = line.split(':').collect();
    (f.len() >= 4).then_some(())?;
    let members = f[3].split(',').filter(|m| !m.is_empty()).collect();
    Some((f[0], f[2].parse().ok()?, members))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> ContainerConfig {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        ContainerConfig {
            entrypoint: entrypoint.map(v),
            cmd: cmd.map(v),
            ..Default::default()
        }
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    /// Docker's ENTRYPOINT/CMD interaction table, plus the two overrides.
    #[test]
    fn entrypoint_cmd_matrix() {
        let none = cfg(None, None);
        let only_cmd = cfg(None, Some(&["sh", "-c", "echo hi"]));
        let only_entry = cfg(Some(&["/entry", "a"]), None);
        let both = cfg(Some(&["/entry", "a"]), Some(&["b", "c"]));
        assert_eq!(command(&none, None, &[]), Err(ProcessError::NoCommand));
        assert_eq!(command(&only_cmd, None, &[]).unwrap(), args(&["sh", "-c", "echo hi"]));
        assert_eq!(command(&only_cmd, None, &args(&["ls"])).unwrap(), args(&["ls"]));
        assert_eq!(command(&only_entry, None, &[]).unwrap(), args(&["/entry", "a"]));
        assert_eq!(command(&both, None, &[]).unwrap(), args(&["/entry", "a", "b", "c"]));
        assert_eq!(
            command(&both, None, &args(&["x"])).unwrap(),
            args(&["/entry", "a", "x"])
        );
        // --entrypoint drops the image's Cmd too.
        assert_eq!(
            command(&both, Some("/bin/echo hi"), &[]).unwrap(),
            args(&["/bin/echo", "hi"])
        );
        assert_eq!(
            command(&both, Some("/bin/echo"), &args(&["x"])).unwrap(),
            args(&["/bin/echo", "x"])
        );
        assert_eq!(command(&none, Some(""), &[]), Err(ProcessError::NoCommand));
    }

    #[test]
    fn words() {
        assert_eq!(
            split_words(r#"sh -c 'echo "a b"' x\ y "q\"t""#).unwrap(),
            args(&["sh", "-c", "echo \"a b\"", "x y", "q\"t"])
        );
        assert!(split_words("'open").is_err());
    }

    #[test]
    fn env_order_and_overrides() {
        let mut c = cfg(None, None);
        c.env = Some(args(&["PATH=/opt/bin", "A=1", "B=2"]));
        let env = environment(&c, &args(&["B=3", "C=4"]), "box").unwrap();
        assert_eq!(env, args(&["PATH=/opt/bin", "HOSTNAME=box", "A=1", "B=3", "C=4"]));
        assert!(environment(&c, &args(&["=x"]), "box").is_err());
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\napp:x:1000:\nstaff:x:50:app\nvideo:x:44:app,other\n";

    #[test]
    fn users_and_groups() {
        let root = resolve_user("", PASSWD, GROUP).unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        let app = resolve_user("app", PASSWD, GROUP).unwrap();
        assert_eq!((app.uid, app.gid, app.groups), (1000, 1000, vec![1000, 50, 44]));
        assert_eq!(resolve_user("1000", PASSWD, GROUP).unwrap().groups, vec![1000, 50, 44]);
        assert_eq!(resolve_user("app:staff", PASSWD, GROUP).unwrap().gid, 50);
        let anon = resolve_user("4242:7", PASSWD, GROUP).unwrap();
        assert_eq!(
            (anon.uid, anon.gid, anon.groups, anon.home.as_str()),
            (4242, 7, vec![7], "/")
        );
        assert_eq!(
            resolve_user("nobody", PASSWD, GROUP),
            Err(ProcessError::NoSuchUser("nobody".into()))
        );
        assert_eq!(
            resolve_user("app:nogrp", PASSWD, GROUP),
            Err(ProcessError::NoSuchGroup("nogrp".into()))
        );
    }
}
