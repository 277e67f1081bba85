//! Restoring hostile archives through the binary: refused with 65, nothing
//! written outside the target, no staging left; setuid bits dropped.

use crate::harness::*;
use sha2::Digest;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

enum E<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Char(&'a str),
    Fifo(&'a str),
    Zeros(&'a str, u64),
}

fn header(path: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    // Raw name bytes: the tar crate's set_path refuses `..` and absolute paths.
    let name = &mut h.as_old_mut().name;
    name[..path.len()].copy_from_slice(path.as_bytes());
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Build `name` in `dir` from entries, with a correct `.sha256` sidecar.
fn hostile(dir: &Path, name: &str, entries: &[E]) -> PathBuf {
    let path = dir.join(name);
    let file = std::fs::File::create(&path).unwrap();
    let enc = zstd::Encoder::new(file, 3).unwrap();
    let mut b = tar::Builder::new(enc);
    for e in entries {
        match e {
            E::File(p, data, mode) => {
                let mut h = header(p, tar::EntryType::Regular, data.len() as u64, *mode);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            E::Dir(p) => {
                let mut h = header(p, tar::EntryType::Directory, 0, 0o755);
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            E::Symlink(p, target) | E::Hardlink(p, target) => {
                let kind = if matches!(e, E::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                let mut h = header(p, kind, 0, 0o777);
                h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            E::Char(p) | E::Fifo(p) => {
                let kind = if matches!(e, E::Char(_)) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Fifo
                };
                let mut h = header(p, kind, 0, 0o644);
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            E::Zeros(p, size) => {
                let mut h = header(p, tar::EntryType::Regular, *size, 0o644);
                h.set_cksum();
                b.append(&h, std::io::repeat(0).take_n(*size)).unwrap();
            }
        }
    }
    b.into_inner().unwrap().finish().unwrap();
    let hex = format!("{:x}", sha2::Sha256::digest(std::fs::read(&path).unwrap()));
    let mut f = std::fs::File::create(dir.join(format!("{name}.sha256"))).unwrap();
    writeln!(f, "{hex}  {name}").unwrap();
    path
}

trait TakeN: std::io::Read + Sized {
    fn take_n(self, n: u64) -> std::io::Take<Self> {
        std::io::Read::take(self, n)
    }
}
impl<R: std::io::Read> TakeN for R {}

fn refused(entries: &[E]) {
    let t = Test::new();
    std::fs::create_dir_all(t.path("in")).unwrap();
    std::fs::create_dir_all(t.path("work")).unwrap();
    let a = hostile(&t.path("in"), "evil.tar.zst", entries);
    let before = snapshot(t.root.path());
    let target = t.path("work/target");
    let r = t.run(&[
        "restore",
        a.to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
    ]);
    r.code(65);
    assert_eq!(
        before,
        snapshot(t.root.path()),
        "something was written:\n{}",
        r.stderr
    );
    assert!(
        std::fs::metadata("/tmp/hla-escape").is_err(),
        "escaped to /tmp"
    );
}

#[test]
fn dotdot_path_is_refused() {
    refused(&[
        E::File("ok.txt", b"fine", 0o644),
        E::File("../escape.txt", b"x", 0o644),
    ]);
}

#[test]
fn absolute_path_is_refused() {
    refused(&[E::File("/tmp/hla-escape", b"x", 0o644)]);
}

#[test]
fn escaping_symlinks_are_refused() {
    refused(&[
        E::Symlink("l", "/tmp"),
        E::File("l/hla-escape", b"x", 0o644),
    ]);
    refused(&[E::Dir("d"), E::Symlink("d/up", "../../..")]);
}

#[test]
fn symlink_then_write_through_it_is_refused() {
    refused(&[
        E::Symlink("l", "."),
        E::File("l/x", b"x", 0o644),
        E::File("l/x", b"y", 0o644),
    ]);
}

#[test]
fn device_and_fifo_entries_are_refused() {
    refused(&[E::Char("dev")]);
    refused(&[E::Fifo("fifo")]);
}

#[test]
fn hardlinks_out_of_the_tree_are_refused() {
    refused(&[E::Hardlink("pw", "/etc/passwd")]);
    refused(&[E::Hardlink("pw", "../outside")]);
}

#[test]
fn duplicate_paths_are_refused() {
    refused(&[E::File("a", b"1", 0o644), E::File("a", b"2", 0o644)]);
}

#[test]
fn decompression_bomb_is_refused() {
    refused(&[E::Zeros("zeros", 1 << 30)]);
}

#[test]
fn setuid_bits_do_not_come_back() {
    let t = Test::new();
    std::fs::create_dir_all(t.path("in")).unwrap();
    let a = hostile(
        &t.path("in"),
        "suid.tar.zst",
        &[E::File("bin/tool", b"#!/bin/sh\n", 0o4755)],
    );
    let target = t.path("target");
    t.run(&[
        "restore",
        a.to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
    ])
    .code(0);
    let mode = std::fs::metadata(target.join("bin/tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);
}

#[test]
fn restore_into_a_non_empty_directory_is_refused() {
    let t = Test::new();
    std::fs::create_dir_all(t.path("in")).unwrap();
    let a = hostile(&t.path("in"), "ok.tar.zst", &[E::File("f", b"x", 0o644)]);
    t.write("target/existing", "keep me");
    let r = t.run(&[
        "restore",
        a.to_str().unwrap(),
        "--to",
        t.path("target").to_str().unwrap(),
    ]);
    assert_ne!(r.code, 0);
    assert_eq!(
        std::fs::read_to_string(t.path("target/existing")).unwrap(),
        "keep me"
    );
}

#[test]
fn absolute_symlinks_are_kept_only_on_request_and_never_written_through() {
    let t = Test::new();
    std::fs::create_dir_all(t.path("in")).unwrap();
    let a = hostile(
        &t.path("in"),
        "etc.tar.zst",
        &[
            E::File("etc/zone", b"UTC\n", 0o644),
            E::Symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
        ],
    );
    let target = t.path("target");
    t.run(&[
        "restore",
        a.to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
    ])
    .code(65)
    .stderr_has("--allow-absolute-symlinks");
    assert!(!target.exists());
    t.run(&[
        "restore",
        a.to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
        "--allow-absolute-symlinks",
    ])
    .code(0);
    assert_eq!(
        std::fs::read_link(target.join("etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/UTC")
    );
    // Writing through an absolute link stays refused with the flag.
    let b = hostile(
        &t.path("in"),
        "through.tar.zst",
        &[
            E::Symlink("l", "/tmp"),
            E::File("l/hla-escape", b"x", 0o644),
        ],
    );
    let target2 = t.path("target2");
    t.run(&[
        "restore",
        b.to_str().unwrap(),
        "--to",
        target2.to_str().unwrap(),
        "--allow-absolute-symlinks",
    ])
    .code(65);
    assert!(std::fs::metadata("/tmp/hla-escape").is_err());
    assert!(!target2.exists());
}
