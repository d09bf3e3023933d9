//! Device allow lists, and their two kernel forms: cgroup v1 `devices.allow` lines and the
//! cgroup v2 eBPF filter's rules.
//!
//! A container may open or create only the device nodes on its list; everything else is
//! denied. The rules are validated once here, so both forms express exactly the same list.

use crate::sys::bpf::{self, DeviceAllow};

use super::CgroupError;

/// Which device nodes a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DeviceKind {
    Char,
    Block,
    /// Both character and block devices.
    All,
}

/// One allowed device (or device class). `None` numbers match any.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct DeviceRule {
    pub kind: DeviceKind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// A non-empty subset of "rwm": read, write, mknod.
    pub access: String,
}

impl DeviceRule {
    pub fn new(kind: DeviceKind, major: Option<u32>, minor: Option<u32>, access: &str) -> DeviceRule {
        DeviceRule {
            kind,
            major,
            minor,
            access: access.to_string(),
        }
    }

    /// A character device, all of "rwm" (the form GPU and /dev rules take).
    pub fn char(major: u32, minor: Option<u32>) -> DeviceRule {
        DeviceRule::new(DeviceKind::Char, Some(major), minor, "rwm")
    }
}

/// Docker's default allow list: mknod of any character or block device (creating a node
/// grants nothing by itself: opening it is checked again), and full access to null, zero,
/// full, random, urandom, tty, console, ptmx and the pty slaves.
pub fn default_devices() -> Vec<DeviceRule> {
    let mut rules = vec![
        DeviceRule::new(DeviceKind::Char, None, None, "m"),
        DeviceRule::new(DeviceKind::Block, None, None, "m"),
    ];
    for (major, minor) in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2)] {
        rules.push(DeviceRule::char(major, Some(minor)));
    }
    rules.push(DeviceRule::char(136, None));
    rules
}

/// The rule's access as `bpf::ACC_*` bits, or an error naming the rule.
fn access_bits(rule: &DeviceRule) -> Result<u32, CgroupError> {
    let mut bits = 0;
    for c in rule.access.chars() {
        bits |= match c {
            'r' => bpf::ACC_READ,
            'w' => bpf::ACC_WRITE,
            'm' => bpf::ACC_MKNOD,
            _ => 0xff,
        };
    }
    if bits == 0 || bits > 7 {
        return Err(CgroupError::InvalidLimit {
            field: "devices",
            detail: format!(
                "access {:?} of {rule:?} is not a non-empty subset of \"rwm\"",
                rule.access
            ),
        });
    }
    Ok(bits)
}

/// Checks every rule (access letters, numbers the filter can compare).
pub(crate) fn validate(rules: &[DeviceRule]) -> Result<(), CgroupError> {
    for rule in rules {
        access_bits(rule)?;
        if rule.major.into_iter().chain(rule.minor).any(|n| n > i32::MAX as u32) {
            return Err(CgroupError::InvalidLimit {
                field: "devices",
                detail: format!("device number of {rule:?} is out of range"),
            });
        }
    }
    Ok(())
}

/// True for a rule that lets every device through (so no filter is needed at all).
pub(crate) fn allows_everything(rule: &DeviceRule) -> bool {
    let all = bpf::ACC_READ | bpf::ACC_WRITE | bpf::ACC_MKNOD;
    rule.kind == DeviceKind::All && rule.major.is_none() && rule.minor.is_none() && access_bits(rule).ok() == Some(all)
}

/// The access letters in the kernel's order.
fn access_text(bits: u32) -> String {
    [(bpf::ACC_READ, 'r'), (bpf::ACC_WRITE, 'w'), (bpf::ACC_MKNOD, 'm')]
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, c)| c)
        .collect()
}

/// The cgroup v1 `devices.allow` lines for a validated rule. v1 can say "all devices" only
/// as a bare "a", so a narrower `All` rule becomes one `c` and one `b` line.
pub(crate) fn v1_lines(rule: &DeviceRule) -> Result<Vec<String>, CgroupError> {
    let access = access_text(access_bits(rule)?);
    let num = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
    let line = |t: char| format!("{t} {}:{} {access}", num(rule.major), num(rule.minor));
    Ok(match rule.kind {
        DeviceKind::Char => vec![line('c')],
        DeviceKind::Block => vec![line('b')],
        DeviceKind::All if rule.major.is_none() && rule.minor.is_none() && access == "rwm" => vec!["a".into()],
        DeviceKind::All => vec![line('c'), line('b')],
    })
}

/// The eBPF filter's form of validated rules.
pub(crate) fn bpf_rules(rules: &[DeviceRule]) -> Result<Vec<DeviceAllow>, CgroupError> {
    rules
        .iter()
        .map(|rule| {
            Ok(DeviceAllow {
                dev_type: match rule.kind {
                    DeviceKind::Char => Some(bpf::DEV_CHAR),
                    DeviceKind::Block => Some(bpf::DEV_BLOCK),
                    DeviceKind::All => None,
                },
                major: rule.major,
                minor: rule.minor,
                access: access_bits(rule)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_list_is_dockers() {
        let lines: Vec<String> = default_devices().iter().flat_map(|r| v1_lines(r).unwrap()).collect();
        assert_eq!(
            lines,
            [
                "c *:* m",
                "b *:* m",
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 5:0 rwm",
                "c 5:1 rwm",
                "c 5:2 rwm",
                "c 136:* rwm"
            ]
        );
    }

    #[test]
    fn all_rules_become_a_or_two_lines() {
        let all = DeviceRule::new(DeviceKind::All, None, None, "mwr");
        assert_eq!(v1_lines(&all).unwrap(), ["a"]);
        let narrow = DeviceRule::new(DeviceKind::All, Some(8), None, "r");
        assert_eq!(v1_lines(&narrow).unwrap(), ["c 8:* r", "b 8:* r"]);
    }

    #[test]
    fn access_is_validated() {
        for bad in ["", "x", "rwx", "R"] {
            let rule = DeviceRule::new(DeviceKind::Char, Some(1), Some(3), bad);
            assert!(validate(&[rule]).is_err(), "{bad:?}");
        }
        let huge = DeviceRule::new(DeviceKind::Char, Some(u32::MAX), None, "r");
        assert!(validate(&[huge]).is_err());
        validate(&default_devices()).unwrap();
    }

    #[test]
    fn bpf_form_keeps_type_numbers_and_bits() {
        let rules = bpf_rules(&[DeviceRule::new(DeviceKind::Char, Some(195), None, "rw")]).unwrap();
        assert_eq!(
            rules,
            [DeviceAllow {
                dev_type: Some(bpf::DEV_CHAR),
                major: Some(195),
                minor: None,
                access: bpf::ACC_READ | bpf::ACC_WRITE
            }]
        );
    }
}
