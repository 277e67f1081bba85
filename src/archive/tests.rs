//! Unit tests: round trips, compatibility with sha256sum and GNU tar,
//! corruption, hostile archives, caps, excludes, changing files, debris.

use super::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tempfile::TempDir;

fn meta() -> ManifestMeta {
    ManifestMeta {
        service: "web".into(),
        kind: "archive".into(),
        created_at: 1_700_000_000,
        hostname: "host".into(),
        capture: None,
    }
}

fn req<'a>(dest: &'a Path, name: &'a str, sources: &'a [PathBuf]) -> CreateRequest<'a> {
    CreateRequest {
        sources,
        dest_dir: dest,
        file_name: name,
        level: 3,
        compress: true,
        optional: &[],
        threads: 2,
        exclude: &[],
        meta: meta(),
        generated: &[],
        cancel: None,
    }
}

fn mk(dest: &Path, name: &str, sources: &[PathBuf], exclude: &[String]) -> Result<ArchiveInfo> {
    create(&CreateRequest {
        exclude,
        ..req(dest, name, sources)
    })
}

fn put(p: &Path, data: &[u8], mode: u32) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    let f = fs::File::options().write(true).open(p).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_secs(1_600_000_000 + data.len() as u64))
        .unwrap();
}

fn pseudo_random(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Half random, half text: compressible but not trivially.
            if i % 2 == 0 {
                (x & 0xff) as u8
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect()
}

const LONG_DIR: &str = "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";
const LONG_FILE: &str =
    "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff.txt";

/// A tree with every kind of entry we archive.
fn sample_tree(root: &Path) {
    put(&root.join("a.txt"), b"hello\n", 0o644);
    put(&root.join("exec.sh"), b"#!/bin/sh\necho hi\n", 0o755);
    put(&root.join("private"), b"secret", 0o600);
    put(&root.join("empty"), b"", 0o644);
    put(
        &root.join("big.bin"),
        &pseudo_random(3 * 1024 * 1024 + 123),
        0o640,
    );
    put(&root.join(LONG_DIR).join(LONG_FILE), b"long name", 0o644);
    put(&root.join("sub/deeper/c.txt"), b"c", 0o644);
    fs::create_dir_all(root.join("emptydir")).unwrap();
    fs::set_permissions(root.join("emptydir"), fs::Permissions::from_mode(0o750)).unwrap();
    symlink("a.txt", root.join("link")).unwrap();
    symlink("../a.txt", root.join("sub/uplink")).unwrap();
    symlink("dangling-target", root.join("dangling")).unwrap();
    symlink(format!("{LONG_DIR}/{LONG_FILE}"), root.join("longlink")).unwrap();
    fs::hard_link(root.join("a.txt"), root.join("hard")).unwrap();
    put(&root.join("ro/inside"), b"ro", 0o444);
    fs::set_permissions(root.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    for d in ["sub/deeper", "sub", LONG_DIR, "emptydir", "ro"] {
        let f = fs::File::open(root.join(d)).unwrap();
        f.set_modified(UNIX_EPOCH + Duration::from_secs(1_500_000_000))
            .unwrap();
    }
}

/// path -> (kind, mode, content or target, mtime seconds)
type Snap = BTreeMap<String, (String, u32, Vec<u8>, i64)>;

fn snapshot(root: &Path) -> Snap {
    fn walk(root: &Path, p: &Path, out: &mut Snap) {
        let m = fs::symlink_metadata(p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let ft = m.file_type();
        let (kind, data) = if ft.is_symlink() {
            (
                "symlink",
                fs::read_link(p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes(),
            )
        } else if ft.is_dir() {
            ("dir", Vec::new())
        } else {
            ("file", fs::read(p).unwrap())
        };
        let mtime = if ft.is_symlink() { 0 } else { m.mtime() };
        out.insert(rel, (kind.to_string(), m.mode() & 0o7777, data, mtime));
        if ft.is_dir() {
            for e in fs::read_dir(p).unwrap() {
                walk(root, &e.unwrap().path(), out);
            }
        }
    }
    let mut out = Snap::new();
    walk(root, root, &mut out);
    out
}

fn inside(target: &Path, abs: &Path) -> PathBuf {
    target.join(abs.strip_prefix("/").unwrap())
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn round_trip() {
    let sb = TempDir::new().unwrap();
    let src = sb.path().join("src/tree");
    sample_tree(&src);
    let dest = sb.path().join("backups");
    let info = mk(
        &dest,
        "web_20261125_221500.tar.zst",
        std::slice::from_ref(&src),
        &[],
    )
    .unwrap();
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    assert_eq!(info.path, dest.join("web_20261125_221500.tar.zst"));
    assert_eq!(info.size, fs::metadata(&info.path).unwrap().len());
    assert_eq!(info.sha256, sha256_file(&info.path).unwrap());
    assert_eq!(
        names(&dest),
        [
            "web_20261125_221500.tar.zst",
            "web_20261125_221500.tar.zst.manifest.json",
            "web_20261125_221500.tar.zst.sha256"
        ]
    );
    assert_eq!(fs::metadata(&info.path).unwrap().mode() & 0o777, 0o600);
    let sidecar = fs::read_to_string(sidecar_paths(&info.path).0).unwrap();
    assert_eq!(
        sidecar,
        format!("{}  web_20261125_221500.tar.zst\n", info.sha256)
    );
    let m = read_manifest(&info.path).unwrap();
    assert_eq!(m, info.manifest);
    assert_eq!(m.format, FORMAT);
    assert_eq!(
        (m.service.as_str(), m.kind.as_str(), m.created_at),
        ("web", "archive", 1_700_000_000)
    );
    assert_eq!(
        (m.entries, m.bytes_in, m.size),
        (info.entries, info.bytes_in, info.size)
    );
    assert_eq!(m.compression, "zstd");

    // list
    let entries = list(&info.path).unwrap();
    assert_eq!(entries.len() as u64, info.entries);
    let prefix = src
        .strip_prefix("/")
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let by_path: BTreeMap<String, &EntryInfo> = entries
        .iter()
        .map(|e| (e.path.strip_prefix(&prefix).unwrap().to_string(), e))
        .collect();
    assert_eq!(by_path[""].kind, "dir");
    assert_eq!(by_path["/a.txt"].kind, "file");
    assert_eq!(by_path["/a.txt"].size, 6);
    assert_eq!(by_path["/exec.sh"].mode, 0o755);
    assert_eq!(by_path["/link"].kind, "symlink");
    assert_eq!(by_path["/link"].link_target.as_deref(), Some("a.txt"));
    assert_eq!(by_path["/hard"].kind, "hardlink");
    assert_eq!(
        by_path["/hard"].link_target.as_deref(),
        Some(format!("{prefix}/a.txt").as_str())
    );
    assert_eq!(by_path["/emptydir"].kind, "dir");
    assert_eq!(by_path[&format!("/{LONG_DIR}/{LONG_FILE}")].kind, "file");
    assert_eq!(
        by_path["/longlink"].link_target.as_deref(),
        Some(format!("{LONG_DIR}/{LONG_FILE}").as_str())
    );
    assert_eq!(by_path["/a.txt"].mtime, 1_600_000_006);

    // verify (full and quick)
    let v = verify(&info.path, None).unwrap();
    assert_eq!(
        (v.entries, v.bytes_out, v.size),
        (info.entries, info.bytes_in, info.size)
    );
    assert_eq!(v.sha256, info.sha256);
    let q = verify_checksum(&info.path, Some(&info.sha256.to_uppercase())).unwrap();
    assert_eq!((q.entries, q.bytes_out, q.size), (0, 0, info.size));

    // extract and compare
    let target = sb.path().join("restore/out");
    let x = extract(&info.path, &target, &ExtractOptions::default()).unwrap();
    assert_eq!(x.entries, info.entries);
    assert_eq!(x.bytes, info.bytes_in);
    let restored = inside(&target, &src);
    assert_eq!(snapshot(&src), snapshot(&restored));
    assert_eq!(
        fs::metadata(restored.join("a.txt")).unwrap().ino(),
        fs::metadata(restored.join("hard")).unwrap().ino()
    );
    // Implicit parents (the source's ancestors) and the root.
    assert_eq!(fs::metadata(&target).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(
        fs::metadata(restored.parent().unwrap()).unwrap().mode() & 0o7777,
        0o755
    );
    assert_eq!(names(&sb.path().join("restore")), ["out"]);
    fs::set_permissions(restored.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(src.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn sha256sum_and_gnu_tar_compatible() {
    let sb = TempDir::new().unwrap();
    let src = sb.path().join("src");
    sample_tree(&src);
    let dest = sb.path().join("b");
    let info = mk(&dest, "x.tar.zst", std::slice::from_ref(&src), &[]).unwrap();
    if have("sha256sum") {
        let out = Command::new("sha256sum")
            .args(["-c", "x.tar.zst.sha256"])
            .current_dir(&dest)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if have("tar") && have("zstd") {
        let gnu = sb.path().join("gnu");
        fs::create_dir(&gnu).unwrap();
        let out = Command::new("tar")
            .arg("--zstd")
            .arg("-xpf")
            .arg(&info.path)
            .arg("-C")
            .arg(&gnu)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(snapshot(&src), snapshot(&inside(&gnu, &src)));
        let out = Command::new("sh")
            .arg("-c")
            .arg("zstd -dc \"$1\" | tar -tvf - >/dev/null")
            .arg("sh")
            .arg(&info.path)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for d in [&src, &inside(&gnu, &src)] {
            fs::set_permissions(d.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    fs::set_permissions(src.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
}

fn small_archive(sb: &Path) -> ArchiveInfo {
    let src = sb.join("src");
    put(&src.join("a"), &pseudo_random(200_000), 0o644);
    put(&src.join("b/c"), b"cc", 0o644);
    mk(&sb.join("b"), "s.tar.zst", &[src], &[]).unwrap()
}

/// Nothing but `keep` in `dir`.
fn assert_only(dir: &Path, keep: &[&str]) {
    let mut k: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
    k.sort();
    assert_eq!(names(dir), k, "unexpected files in {}", dir.display());
}

#[test]
fn corrupted_byte_is_checksum_mismatch() {
    let sb = TempDir::new().unwrap();
    let info = small_archive(sb.path());
    let mut bytes = fs::read(&info.path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&info.path, &bytes).unwrap();
    for r in [
        verify(&info.path, None).map(drop),
        verify_checksum(&info.path, None).map(drop),
    ] {
        assert_eq!(r.unwrap_err().kind(), "checksum_mismatch");
    }
    let land = sb.path().join("land");
    fs::create_dir(&land).unwrap();
    let err = extract(&info.path, &land.join("out"), &ExtractOptions::default()).unwrap_err();
    assert_eq!(err.kind(), "checksum_mismatch", "{err}");
    assert_eq!(err.exit_code(), 65);
    assert_only(&land, &[]);
    // copy_to refuses too and leaves nothing.
    let err = copy_to(&info.path, &sb.path().join("copy")).unwrap_err();
    assert_eq!(err.kind(), "checksum_mismatch");
    assert_only(&sb.path().join("copy"), &[]);
}

#[test]
fn truncated_archive_with_matching_hash_is_unsafe() {
    let sb = TempDir::new().unwrap();
    let info = small_archive(sb.path());
    let bytes = fs::read(&info.path).unwrap();
    for cut in [bytes.len() / 2, bytes.len() - 1, 10] {
        fs::write(&info.path, &bytes[..cut]).unwrap();
        let h = sha256_file(&info.path).unwrap();
        fs::write(sidecar_paths(&info.path).0, format!("{h}  s.tar.zst\n")).unwrap();
        let err = verify(&info.path, None).unwrap_err();
        assert_eq!(err.kind(), "unsafe_archive", "cut {cut}: {err}");
        assert!(verify_checksum(&info.path, None).is_ok());
        let land = sb.path().join(format!("land{cut}"));
        fs::create_dir(&land).unwrap();
        let err = extract(&info.path, &land.join("out"), &ExtractOptions::default()).unwrap_err();
        assert_eq!(err.kind(), "unsafe_archive", "cut {cut}: {err}");
        assert_only(&land, &[]);
    }
}

#[test]
fn missing_sidecar_means_no_checksum() {
    let sb = TempDir::new().unwrap();
    let info = small_archive(sb.path());
    fs::remove_file(sidecar_paths(&info.path).0).unwrap();
    let err = verify(&info.path, None).unwrap_err();
    assert_eq!(err.kind(), "unsafe_archive");
    assert!(err.to_string().contains("no checksum"), "{err}");
    assert_eq!(
        verify_checksum(&info.path, None).unwrap_err().kind(),
        "unsafe_archive"
    );
    assert!(extract(
        &info.path,
        &sb.path().join("o1"),
        &ExtractOptions::default()
    )
    .is_err());
    assert!(!sb.path().join("o1").exists());
    // An explicit checksum, or skipping the check, works.
    verify(&info.path, Some(&info.sha256)).unwrap();
    let opts = ExtractOptions {
        expected_sha256: Some(info.sha256.clone()),
        ..Default::default()
    };
    extract(&info.path, &sb.path().join("o2"), &opts).unwrap();
    let opts = ExtractOptions {
        skip_checksum: true,
        ..Default::default()
    };
    extract(&info.path, &sb.path().join("o3"), &opts).unwrap();
    // A wrong explicit one is a mismatch.
    let wrong = "0".repeat(64);
    assert_eq!(
        verify(&info.path, Some(&wrong)).unwrap_err().kind(),
        "checksum_mismatch"
    );
}

#[test]
fn trailing_data_and_missing_end_marker_are_unsafe() {
    let sb = TempDir::new().unwrap();
    let dir = sb.path();
    // Valid zstd, tar without its end-of-archive marker.
    let mut t = raw_tar(&[H::F(b"a", b"x", 0o644)]);
    t.truncate(t.len() - 1024);
    let a = write_archive(dir, "noend.tar.zst", &zstd::encode_all(&t[..], 3).unwrap());
    let err = verify(&a, None).unwrap_err();
    assert!(err.to_string().contains("end-of-archive"), "{err}");
    // Garbage after the zstd frame.
    let mut z = zstd::encode_all(&raw_tar(&[H::F(b"a", b"x", 0o644)])[..], 3).unwrap();
    z.extend_from_slice(b"garbage");
    let a = write_archive(dir, "garbage.tar.zst", &z);
    assert_eq!(verify(&a, None).unwrap_err().kind(), "unsafe_archive");
    // Non-zero data after the tar end marker.
    let mut t = raw_tar(&[H::F(b"a", b"x", 0o644)]);
    t.extend_from_slice(&raw_tar(&[H::F(b"hidden", b"y", 0o644)]));
    let a = write_archive(dir, "hidden.tar.zst", &zstd::encode_all(&t[..], 3).unwrap());
    let err = verify(&a, None).unwrap_err();
    assert!(
        err.to_string().contains("after the end-of-archive"),
        "{err}"
    );
    let err = extract(&a, &dir.join("out"), &ExtractOptions::default()).unwrap_err();
    assert_eq!(err.kind(), "unsafe_archive");
    assert!(!dir.join("out").exists());
}

// ---- hostile archives -------------------------------------------------

/// Entries for hand-built archives; paths are written into the header bytes
/// directly, bypassing the tar crate's checks.
enum H<'a> {
    F(&'a [u8], &'a [u8], u32),
    D(&'a [u8], u32),
    S(&'a [u8], &'a [u8]),
    L(&'a [u8], &'a [u8]),
    Chr(&'a [u8]),
    Blk(&'a [u8]),
    Fifo(&'a [u8]),
}

fn raw_header(path: &[u8], ty: u8, link: &[u8], size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..path.len()].copy_from_slice(path);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_entry_type(tar::EntryType::new(ty));
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_600_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    h
}

fn raw_tar(entries: &[H]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let (h, data): (tar::Header, &[u8]) = match *e {
            H::F(p, d, m) => (raw_header(p, b'0', b"", d.len() as u64, m), d),
            H::D(p, m) => (raw_header(p, b'5', b"", 0, m), b""),
            H::S(p, t) => (raw_header(p, b'2', t, 0, 0o777), b""),
            H::L(p, t) => (raw_header(p, b'1', t, 0, 0o644), b""),
            H::Chr(p) => (raw_header(p, b'3', b"", 0, 0o644), b""),
            H::Blk(p) => (raw_header(p, b'4', b"", 0, 0o644), b""),
            H::Fifo(p) => (raw_header(p, b'6', b"", 0, 0o644), b""),
        };
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Write a compressed archive and its correct sidecar.
fn write_archive(dir: &Path, name: &str, zst: &[u8]) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    fs::write(&p, zst).unwrap();
    let h = sha256_file(&p).unwrap();
    fs::write(sidecar_paths(&p).0, format!("{h}  {name}\n")).unwrap();
    p
}

#[test]
fn hostile_archives_are_refused() {
    let abs_probe = format!("/tmp/hla-hostile-probe-{}", std::process::id());
    assert!(!Path::new("/etc/x").exists());
    let cases: Vec<(&str, Vec<H>)> = vec![
        ("dotdot", vec![H::F(b"../x", b"pwned", 0o644)]),
        ("dotdot2", vec![H::F(b"../../x", b"pwned", 0o644)]),
        (
            "inner dotdot",
            vec![H::D(b"a/", 0o755), H::F(b"a/../../x", b"pwned", 0o644)],
        ),
        ("absolute", vec![H::F(b"/etc/x", b"pwned", 0o644)]),
        (
            "absolute probe",
            vec![H::F(abs_probe.as_bytes(), b"pwned", 0o644)],
        ),
        (
            "symlink abs then through",
            vec![H::S(b"l", b"/etc"), H::F(b"l/x", b"pwned", 0o644)],
        ),
        (
            "symlink abs passwd",
            vec![H::S(b"l", b"/etc"), H::F(b"l/passwd", b"pwned", 0o644)],
        ),
        ("symlink up", vec![H::S(b"l", b"../../..")]),
        (
            "symlink up from dir",
            vec![H::D(b"d/", 0o755), H::S(b"d/l", b"../..")],
        ),
        (
            "symlink dot then through",
            vec![H::S(b"a", b"."), H::F(b"a/x", b"pwned", 0o644)],
        ),
        (
            "symlink chain escape",
            vec![
                H::D(b"sub/", 0o755),
                H::S(b"sub/up", b".."),
                H::S(b"sub/up2", b"up/.."),
            ],
        ),
        ("symlink inner dotdot", vec![H::S(b"l", b"a/../../x")]),
        ("symlink empty target", vec![H::S(b"l", b"")]),
        ("hardlink abs", vec![H::L(b"h", b"/etc/passwd")]),
        ("hardlink outside", vec![H::L(b"h", b"../outside")]),
        ("hardlink missing", vec![H::L(b"h", b"nothere")]),
        (
            "hardlink to dir",
            vec![H::D(b"d/", 0o755), H::L(b"h", b"d")],
        ),
        (
            "hardlink to symlink",
            vec![H::S(b"s", b"x"), H::L(b"h", b"s")],
        ),
        (
            "hardlink via symlink dir",
            vec![
                H::D(b"d/", 0o755),
                H::F(b"d/f", b"x", 0o644),
                H::S(b"s", b"d"),
                H::L(b"h", b"s/f"),
            ],
        ),
        ("char device", vec![H::Chr(b"dev")]),
        ("block device", vec![H::Blk(b"blk")]),
        ("fifo", vec![H::Fifo(b"fifo")]),
        (
            "duplicate file",
            vec![H::F(b"a", b"1", 0o644), H::F(b"a", b"2", 0o644)],
        ),
        (
            "duplicate normalized",
            vec![H::F(b"a", b"1", 0o644), H::F(b"./a", b"2", 0o644)],
        ),
        (
            "duplicate dir",
            vec![H::D(b"d/", 0o755), H::D(b"d/", 0o755)],
        ),
        (
            "file over symlink",
            vec![H::S(b"a", b"b"), H::F(b"a", b"2", 0o644)],
        ),
        (
            "dir over file",
            vec![H::F(b"a", b"1", 0o644), H::D(b"a/", 0o755)],
        ),
        (
            "file under file",
            vec![H::F(b"a", b"1", 0o644), H::F(b"a/b", b"2", 0o644)],
        ),
        ("empty path", vec![H::F(b"", b"1", 0o644)]),
    ];
    for (name, entries) in cases {
        let sb = TempDir::new().unwrap();
        let arch = write_archive(
            &sb.path().join("arch"),
            "h.tar.zst",
            &zstd::encode_all(&raw_tar(&entries)[..], 3).unwrap(),
        );
        let land = sb.path().join("land");
        fs::create_dir(&land).unwrap();
        let target = land.join("out");
        let err = extract(&arch, &target, &ExtractOptions::default()).unwrap_err();
        eprintln!("{name}: {err}");
        assert_eq!(err.kind(), "unsafe_archive", "{name}: {err}");
        assert_eq!(err.exit_code(), 65, "{name}");
        assert!(!target.exists(), "{name}: target created");
        assert_only(&land, &[]);
        assert_only(sb.path(), &["arch", "land"]);
        assert_only(&sb.path().join("arch"), &["h.tar.zst", "h.tar.zst.sha256"]);
        assert!(!Path::new("/etc/x").exists(), "{name}");
        assert!(!Path::new(&abs_probe).exists(), "{name}");
        // verify only checks integrity: these are well-formed archives.
        verify(&arch, None).unwrap();
    }
}

#[test]
fn acceptable_links_and_mode_stripping() {
    let sb = TempDir::new().unwrap();
    let entries = vec![
        H::D(b"./", 0o755),
        H::D(b"d/", 0o2775),
        H::F(b"d/f", b"data", 0o644),
        H::F(b"suid", b"#!/bin/sh\n", 0o4755),
        H::F(b"sgid", b"x", 0o2711),
        H::D(b"sticky/", 0o1777),
        H::S(b"d/up", b"../suid"),
        H::S(b"d/self", b"."),
        H::S(b"d/root", b".."),
        H::S(b"rel", b"./d/f"),
        H::L(b"hard", b"d/f"),
        H::F(b"x/y/z", b"implicit parents", 0o600),
        H::D(b"x/", 0o700),
    ];
    let arch = write_archive(
        sb.path(),
        "ok.tar.zst",
        &zstd::encode_all(&raw_tar(&entries)[..], 3).unwrap(),
    );
    let t = sb.path().join("out");
    let x = extract(&arch, &t, &ExtractOptions::default()).unwrap();
    assert_eq!(x.entries, entries.len() as u64);
    let mode = |p: &str| fs::symlink_metadata(t.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("suid"), 0o755);
    assert_eq!(mode("sgid"), 0o711);
    assert_eq!(mode("d"), 0o775);
    assert_eq!(mode("sticky"), 0o777);
    assert_eq!(mode("x"), 0o700);
    assert_eq!(mode("x/y"), 0o755);
    assert_eq!(fs::read(t.join("d/up")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(fs::read_link(t.join("d/root")).unwrap(), Path::new(".."));
    assert_eq!(fs::read(t.join("hard")).unwrap(), b"data");
    assert_eq!(fs::read(t.join("x/y/z")).unwrap(), b"implicit parents");
    assert_eq!(fs::metadata(t.join("d/f")).unwrap().mtime(), 1_600_000_000);
}

#[test]
fn decompression_bomb_is_refused_quickly() {
    let sb = TempDir::new().unwrap();
    // 2 GiB of zeros in one file entry. Built as concatenated zstd frames
    // (one 1 MiB frame of zeros repeated), which decode as one stream.
    let total: u64 = 2 << 30;
    let mut z = zstd::encode_all(
        raw_header(b"bomb", b'0', b"", total, 0o644)
            .as_bytes()
            .as_slice(),
        3,
    )
    .unwrap();
    let mib = zstd::encode_all(&vec![0u8; 1 << 20][..], 19).unwrap();
    for _ in 0..(total >> 20) {
        z.extend_from_slice(&mib);
    }
    z.extend_from_slice(&zstd::encode_all(&[0u8; 1024][..], 3).unwrap());
    let arch = write_archive(&sb.path().join("a"), "bomb.tar.zst", &z);
    let ratio = total / z.len() as u64;
    assert!(ratio > 1000, "ratio {ratio}");
    let land = sb.path().join("land");
    fs::create_dir(&land).unwrap();
    let t0 = Instant::now();
    let err = extract(&arch, &land.join("out"), &ExtractOptions::default()).unwrap_err();
    assert_eq!(err.kind(), "unsafe_archive", "{err}");
    assert!(err.to_string().contains("decompression bomb"), "{err}");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t0.elapsed()
    );
    assert_only(&land, &[]);
    // A declared size over max_bytes is refused before any data is written.
    let opts = ExtractOptions {
        max_bytes: Some(1 << 20),
        ..Default::default()
    };
    let err = extract(&arch, &land.join("out"), &opts).unwrap_err();
    assert!(err.to_string().contains("needs more than"), "{err}");
    assert_only(&land, &[]);
}

#[test]
fn entry_and_byte_caps() {
    let sb = TempDir::new().unwrap();
    let entries: Vec<H> = vec![
        H::F(b"a", b"12345", 0o644),
        H::F(b"b", b"12345", 0o644),
        H::F(b"c", b"12345", 0o644),
    ];
    let arch = write_archive(
        sb.path(),
        "c.tar.zst",
        &zstd::encode_all(&raw_tar(&entries)[..], 3).unwrap(),
    );
    let cases = [
        (
            ExtractOptions {
                max_entries: 2,
                ..Default::default()
            },
            false,
        ),
        (
            ExtractOptions {
                max_entries: 3,
                ..Default::default()
            },
            true,
        ),
        (
            ExtractOptions {
                max_bytes: Some(14),
                ..Default::default()
            },
            false,
        ),
        (
            ExtractOptions {
                max_bytes: Some(15),
                ..Default::default()
            },
            true,
        ),
    ];
    for (i, (opts, ok)) in cases.into_iter().enumerate() {
        let t = sb.path().join(format!("out{i}"));
        let r = extract(&arch, &t, &opts);
        assert_eq!(r.is_ok(), ok, "case {i}: {r:?}");
        if !ok {
            assert_eq!(r.unwrap_err().kind(), "unsafe_archive");
            assert!(!t.exists());
        }
    }
}

#[test]
fn target_rules() {
    let sb = TempDir::new().unwrap();
    let info = small_archive(sb.path());
    let opts = ExtractOptions::default();
    // Non-empty target: refused, untouched.
    let full = sb.path().join("full");
    put(&full.join("keep"), b"k", 0o644);
    let err = extract(&info.path, &full, &opts).unwrap_err();
    assert_eq!(err.kind(), "usage", "{err}");
    assert_eq!(names(&full), ["keep"]);
    // A file: refused.
    let file = sb.path().join("file");
    put(&file, b"f", 0o644);
    assert_eq!(
        extract(&info.path, &file, &opts).unwrap_err().kind(),
        "usage"
    );
    // Empty directory: replaced, keeping its mode.
    let empty = sb.path().join("empty");
    fs::create_dir(&empty).unwrap();
    fs::set_permissions(&empty, fs::Permissions::from_mode(0o750)).unwrap();
    extract(&info.path, &empty, &opts).unwrap();
    assert_eq!(fs::metadata(&empty).unwrap().mode() & 0o7777, 0o750);
    assert!(inside(&empty, &sb.path().join("src/b/c")).exists());
    // Missing parents are created; on failure they are removed again.
    let deep = sb.path().join("p1/p2/out");
    extract(&info.path, &deep, &opts).unwrap();
    assert!(inside(&deep, &sb.path().join("src/a")).exists());
    let hostile = write_archive(
        &sb.path().join("h"),
        "h.tar.zst",
        &zstd::encode_all(&raw_tar(&[H::F(b"../x", b"", 0o644)])[..], 3).unwrap(),
    );
    assert!(extract(&hostile, &sb.path().join("q1/q2/out"), &opts).is_err());
    assert!(!sb.path().join("q1").exists());
    // Relative target.
    let _ = info;
}

// ---- create behaviour -------------------------------------------------

fn paths_of(archive: &Path) -> Vec<String> {
    list(archive).unwrap().into_iter().map(|e| e.path).collect()
}

#[test]
fn excludes() {
    let sb = TempDir::new().unwrap();
    let src = sb.path().join("tree");
    for p in [
        "a.log",
        "sub/b.log",
        "cache/x",
        "keep.txt",
        "sub/keep2",
        "sub/skipme",
        "node/node_modules/m/i.js",
    ] {
        put(&src.join(p), b"x", 0o644);
    }
    let abs = format!("{}/sub/skipme", src.display());
    let ex: Vec<String> = ["*.log", "cache", &abs, "**/node_modules"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let info = mk(
        &sb.path().join("b"),
        "e.tar.zst",
        std::slice::from_ref(&src),
        &ex,
    )
    .unwrap();
    let pre = src
        .strip_prefix("/")
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut got: Vec<String> = paths_of(&info.path)
        .into_iter()
        .map(|p| p.replacen(&pre, "", 1))
        .collect();
    got.sort();
    assert_eq!(got, ["", "/keep.txt", "/node", "/sub", "/sub/keep2"]);
    // Bad pattern: usage error.
    let err = mk(
        &sb.path().join("b"),
        "bad.tar.zst",
        &[src],
        &["[x".to_string()],
    )
    .unwrap_err();
    assert_eq!(err.kind(), "usage");
}

#[test]
fn a_missing_source_fails_unless_optional() {
    let sb = TempDir::new().unwrap();
    let src = sb.path().join("tree");
    put(&src.join("a"), b"x", 0o644);
    let missing = sb.path().join("nope");
    let dest = sb.path().join("b");
    let sources = [missing.clone(), src];
    let err = mk(&dest, "m.tar.zst", &sources, &[]).unwrap_err();
    assert_eq!(err.kind(), "config", "{err}");
    assert!(err.to_string().contains("nope") && err.to_string().contains("does not exist"));
    assert!(!dest.exists(), "nothing is written");

    let optional = [missing];
    let info = create(&CreateRequest {
        optional: &optional,
        ..req(&dest, "m.tar.zst", &sources)
    })
    .unwrap();
    assert_eq!(info.warnings.len(), 1);
    assert!(
        info.warnings[0].contains("does not exist") && info.warnings[0].contains("nope"),
        "{:?}",
        info.warnings
    );
    assert_eq!(info.entries, 2);
    verify(&info.path, None).unwrap();
}

#[test]
fn a_backup_with_nothing_in_it_is_refused_and_leaves_nothing() {
    let sb = TempDir::new().unwrap();
    let dest = sb.path().join("b");
    let gone = [sb.path().join("gone")];
    let err = create(&CreateRequest {
        optional: &gone,
        ..req(&dest, "e.tar.zst", &gone)
    })
    .unwrap_err();
    assert!(err.to_string().contains("nothing to back up"), "{err}");
    assert_only(&dest, &[]);
}

#[test]
fn same_name_twice_gets_a_numbered_name_and_both_verify() {
    let sb = TempDir::new().unwrap();
    let src = sb.path().join("tree");
    put(&src.join("a"), b"x", 0o644);
    let dest = sb.path().join("b");
    let one = mk(&dest, "w_1.tar.zst", std::slice::from_ref(&src), &[]).unwrap();
    let two = mk(&dest, "w_1.tar.zst", std::slice::from_ref(&src), &[]).unwrap();
    let three = mk(&dest, "w_1.tar.zst", std::slice::from_ref(&src), &[]).unwrap();
    assert_eq!(one.path, dest.join("w_1.tar.zst"));
    assert_eq!(two.path, dest.join("w_1-2.tar.zst"));
    assert_eq!(three.path, dest.join("w_1-3.tar.zst"));
    assert_eq!(two.manifest.file_name, "w_1-2.tar.zst");
    for i in [&one, &two, &three] {
        verify(&i.path, None).unwrap();
        assert!(crate::archive::is_archive_name(
            i.path.file_name().unwrap().to_str().unwrap()
        ));
    }
}

#[test]
fn uncompressed_archives_are_plain_tar_and_read_back() {
    let sb = TempDir::new().unwrap();
    let src = sb.path().join("tree");
    put(&src.join("a"), b"hello plain", 0o644);
    put(&src.join("sub/b"), &vec![7u8; 300_000], 0o600);
    let dest = sb.path().join("b");
    let sources = [src.clone()];
    let info = create(&CreateRequest {
        compress: false,
        ..req(&dest, "p.tar", &sources)
    })
    .unwrap();
    assert_eq!(info.manifest.compression, "none");
    let bytes = fs::read(&info.path).unwrap();
    // ustar/GNU magic at offset 257 of the first header: a plain tar.
    assert_eq!(&bytes[257..262], b"ustar");
    assert!(info.size >= 300_000);
    verify(&info.path, None).unwrap();
    crate::archive::verify_checksum(&info.path, None).unwrap();
    assert_eq!(list(&info.path).unwrap().len(), info.entries as usize);
    let out = sb.path().join("out");
    extract(&info.path, &out, &ExtractOptions::default()).unwrap();
    let rel = src.strip_prefix("/").unwrap();
    assert_eq!(fs::read(out.join(rel).join("a")).unwrap(), b"hello plain");
    assert_eq!(
        fs::read(out.join(rel).join("sub/b")).unwrap(),
        vec![7u8; 300_000]
    );
    // A flipped byte in a plain tar is a checksum mismatch, as in zstd.
    let mut bad = bytes.clone();
    bad[600] ^= 1;
    fs::write(&info.path, &bad).unwrap();
    assert_eq!(
        verify(&info.path, None).unwrap_err().kind(),
        "checksum_mismatch"
    );
}

#[test]
fn an_unreadable_file_or_dir_is_skipped_with_a_warning_naming_it() {
    // Root reads everything: the unreadable parts are made by a hook that
    // takes the read permission away from a file after the walk listed it,
    // which root ignores; so this test needs an unprivileged uid, and is
    // exercised as root through the binary (tests/integration/backup.rs).
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("running as root: unreadable files are tested through the binary");
        return;
    }
    let sb = TempDir::new().unwrap();
    let src = sb.path().join("tree");
    put(&src.join("a"), b"ok", 0o644);
    put(&src.join("secret"), b"no", 0o644);
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    put(&src.join("closed/x"), b"no", 0o644);
    fs::set_permissions(src.join("closed"), fs::Permissions::from_mode(0o000)).unwrap();
    let dest = sb.path().join("b");
    let info = mk(&dest, "u.tar.zst", std::slice::from_ref(&src), &[]).unwrap();
    fs::set_permissions(src.join("closed"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(info.unreadable.len(), 2, "{:?}", info.warnings);
    assert!(info
        .warnings
        .iter()
        .any(|w| w.contains("secret") && w.contains("cannot read")));
    assert!(info
        .warnings
        .iter()
        .any(|w| w.contains("closed") && w.contains("cannot read")));
    verify(&info.path, None).unwrap();
}

#[test]
fn sockets_and_fifos_are_skipped_with_warnings() {
    let sb = TempDir::new().unwrap();
    let src = sb.path().join("tree");
    put(&src.join("a"), b"x", 0o644);
    let _l = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    let c = std::ffi::CString::new(src.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let info = mk(&sb.path().join("b"), "s.tar.zst", &[src], &[]).unwrap();
    assert_eq!(info.entries, 2);
    assert!(
        info.warnings.iter().any(|w| w.contains("socket ignored")),
        "{:?}",
        info.warnings
    );
    assert!(
        info.warnings.iter().any(|w| w.contains("fifo")),
        "{:?}",
        info.warnings
    );
}

#[test]
fn file_changing_while_read() {
    let sb = TempDir::new().unwrap();
    let src = sb.path().join("tree");
    let orig = pseudo_random(100_000);
    put(&src.join("grows"), &orig, 0o644);
    put(&src.join("shrinks"), &orig, 0o644);
    create::BEFORE_READ.with(|h| {
        *h.borrow_mut() = Some(Box::new(|p: &Path| {
            if p.ends_with("shrinks") {
                fs::File::options()
                    .write(true)
                    .open(p)
                    .unwrap()
                    .set_len(10)
                    .unwrap();
            } else if p.ends_with("grows") {
                fs::File::options()
                    .append(true)
                    .open(p)
                    .unwrap()
                    .write_all(&[7u8; 5000])
                    .unwrap();
            }
        }))
    });
    let r = mk(
        &sb.path().join("b"),
        "c.tar.zst",
        std::slice::from_ref(&src),
        &[],
    );
    create::BEFORE_READ.with(|h| *h.borrow_mut() = None);
    let info = r.unwrap();
    let changed: Vec<&String> = info
        .warnings
        .iter()
        .filter(|w| w.contains("file changed as we read it"))
        .collect();
    assert_eq!(changed.len(), 2, "{:?}", info.warnings);
    verify(&info.path, None).unwrap();
    let t = sb.path().join("out");
    extract(&info.path, &t, &ExtractOptions::default()).unwrap();
    let r = inside(&t, &src);
    assert_eq!(fs::read(r.join("grows")).unwrap(), orig);
    let s = fs::read(r.join("shrinks")).unwrap();
    assert_eq!(s.len(), orig.len());
    assert_eq!(&s[..10], &orig[..10]);
    assert!(s[10..].iter().all(|&b| b == 0));
}

#[test]
fn overlapping_sources_are_archived_once() {
    let sb = TempDir::new().unwrap();
    let src = sb.path().join("tree");
    sample_tree(&src);
    let one = mk(
        &sb.path().join("b"),
        "one.tar.zst",
        std::slice::from_ref(&src),
        &[],
    )
    .unwrap();
    let sources = [
        src.clone(),
        src.join("sub"),
        src.join("a.txt"),
        PathBuf::from(format!("{}/", src.display())),
        src.join("sub/./deeper/../deeper"),
    ];
    let many = mk(&sb.path().join("b"), "many.tar.zst", &sources, &[]).unwrap();
    let mut a = paths_of(&one.path);
    let mut b = paths_of(&many.path);
    let n = b.len();
    b.sort();
    b.dedup();
    assert_eq!(n, b.len(), "duplicates");
    a.sort();
    assert_eq!(a, b);
    let t = sb.path().join("out");
    extract(&many.path, &t, &ExtractOptions::default()).unwrap();
    fs::set_permissions(src.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(
        inside(&t, &src).join("ro"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
}

#[test]
fn destination_inside_source() {
    let sb = TempDir::new().unwrap();
    let src = sb.path().join("srv");
    put(&src.join("data/a"), b"x", 0o644);
    let info = mk(
        &src.join("backups"),
        "in.tar.zst",
        std::slice::from_ref(&src),
        &[],
    )
    .unwrap();
    assert!(
        info.warnings
            .iter()
            .any(|w| w.contains("file is the archive")),
        "{:?}",
        info.warnings
    );
    let paths = paths_of(&info.path);
    assert!(
        !paths.iter().any(|p| p.contains(".in.tar.zst.tmp-")),
        "{paths:?}"
    );
    verify(&info.path, None).unwrap();
}

#[test]
fn source_symlink_is_followed_and_single_files_work() {
    let sb = TempDir::new().unwrap();
    let real = sb.path().join("real");
    put(&real.join("f"), b"data", 0o644);
    let link = sb.path().join("link");
    symlink(&real, &link).unwrap();
    let single = sb.path().join("single.conf");
    put(&single, b"conf", 0o600);
    let info = mk(
        &sb.path().join("b"),
        "l.tar.zst",
        &[link.clone(), single.clone()],
        &[],
    )
    .unwrap();
    let t = sb.path().join("out");
    extract(&info.path, &t, &ExtractOptions::default()).unwrap();
    assert_eq!(fs::read(inside(&t, &link).join("f")).unwrap(), b"data");
    assert_eq!(fs::read(inside(&t, &single)).unwrap(), b"conf");
    assert_eq!(
        fs::metadata(inside(&t, &single)).unwrap().mode() & 0o777,
        0o600
    );
}

#[test]
fn create_refusals_and_cancel() {
    let sb = TempDir::new().unwrap();
    let src = sb.path().join("tree");
    put(&src.join("a"), b"x", 0o644);
    let dest = sb.path().join("b");
    for bad in ["", ".hidden", "a/b"] {
        assert_eq!(
            mk(&dest, bad, std::slice::from_ref(&src), &[])
                .unwrap_err()
                .kind(),
            "usage",
            "{bad:?}"
        );
    }
    assert_eq!(
        mk(&dest, "r.tar.zst", &[PathBuf::from("relative")], &[])
            .unwrap_err()
            .kind(),
        "usage"
    );
    mk(&dest, "x.tar.zst", std::slice::from_ref(&src), &[]).unwrap();
    let cancel = std::sync::atomic::AtomicBool::new(true);
    let err = create(&CreateRequest {
        sources: &[src],
        dest_dir: &dest,
        file_name: "c.tar.zst",
        level: 3,
        compress: true,
        optional: &[],
        threads: 0,
        exclude: &[],
        meta: meta(),
        generated: &[],
        cancel: Some(&cancel),
    })
    .unwrap_err();
    assert!(matches!(&err, Error::Cancelled), "{err}");
    assert_eq!(err.to_string(), "cancelled");
    assert_only(
        &dest,
        &["x.tar.zst", "x.tar.zst.manifest.json", "x.tar.zst.sha256"],
    );
}

// ---- copy, remove, debris ---------------------------------------------

#[test]
fn copy_to_and_remove() {
    let sb = TempDir::new().unwrap();
    let info = small_archive(sb.path());
    let dest = sb.path().join("offsite/x");
    let copied = copy_to(&info.path, &dest).unwrap();
    assert_eq!(copied, dest.join("s.tar.zst"));
    assert_only(
        &dest,
        &["s.tar.zst", "s.tar.zst.manifest.json", "s.tar.zst.sha256"],
    );
    assert_eq!(read_manifest(&copied).unwrap(), info.manifest);
    verify(&copied, None).unwrap();
    if have("sha256sum") {
        let out = Command::new("sha256sum")
            .args(["-c", "s.tar.zst.sha256"])
            .current_dir(&dest)
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    // Idempotent.
    assert_eq!(copy_to(&info.path, &dest).unwrap(), copied);
    remove(&copied).unwrap();
    assert_only(&dest, &[]);
    assert_eq!(remove(&copied).unwrap_err().kind(), "io");
    // Missing sidecars are fine.
    fs::remove_file(sidecar_paths(&info.path).1).unwrap();
    remove(&info.path).unwrap();
    assert!(!info.path.exists() && !sidecar_paths(&info.path).0.exists());
}

fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    assert!(!fsutil::pid_alive(pid));
    pid
}

#[test]
fn cleanup_debris_removes_only_our_debris() {
    let sb = TempDir::new().unwrap();
    let d = sb.path();
    let info = small_archive(d);
    let b = info.path.parent().unwrap().to_path_buf();
    let dead = dead_pid();
    let me = std::process::id();
    let old = SystemTime::now() - Duration::from_secs(25 * 3600);
    let touch = |name: &str, mtime: Option<SystemTime>| {
        let p = b.join(name);
        fs::write(&p, b"x").unwrap();
        if let Some(t) = mtime {
            fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
    };
    // Removed: dead pid, old live pid, orphaned sidecars of ours.
    touch(&format!(".a.tar.zst.tmp-{dead}-00ab12"), None);
    touch(&format!(".a.tar.zst.sha256.tmp-{dead}-ff"), None);
    touch(&format!(".b.tar.zst.tmp-{me}-0a0a0a"), Some(old));
    fs::create_dir(b.join(format!(".out.restore-tmp-{dead}-abcdef"))).unwrap();
    fs::write(b.join(format!(".out.restore-tmp-{dead}-abcdef/f")), b"x").unwrap();
    let mut orphan = info.manifest.clone();
    orphan.file_name = "gone.tar.zst".into();
    fs::write(
        b.join("gone.tar.zst.manifest.json"),
        serde_json::to_vec(&orphan).unwrap(),
    )
    .unwrap();
    touch("gone.tar.zst.sha256", None);
    // Kept: our live temp, a complete backup, orphan sidecars with a live
    // temp (publication in progress), foreign files.
    touch(&format!(".c.tar.zst.tmp-{me}-0b0b0b"), None);
    fs::write(
        b.join("busy.tar.zst.manifest.json"),
        serde_json::to_vec(&orphan).unwrap(),
    )
    .unwrap();
    touch("busy.tar.zst.sha256", None);
    touch(&format!(".busy.tar.zst.tmp-{me}-0c0c0c"), None);
    touch("notes.txt", None);
    touch(".hidden", None);
    touch(".x.tmp-notapid-00", None);
    touch(&format!(".y.tmp-{dead}-nothex"), None);
    touch("lone.iso.sha256", None);
    fs::write(b.join("foreign.manifest.json"), b"{\"format\":\"other\"}").unwrap();
    let mut removed: Vec<String> = cleanup_debris(&b)
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    removed.sort();
    let mut want = vec![
        format!(".a.tar.zst.tmp-{dead}-00ab12"),
        format!(".a.tar.zst.sha256.tmp-{dead}-ff"),
        format!(".b.tar.zst.tmp-{me}-0a0a0a"),
        format!(".out.restore-tmp-{dead}-abcdef"),
        "gone.tar.zst.manifest.json".to_string(),
        "gone.tar.zst.sha256".to_string(),
    ];
    want.sort();
    assert_eq!(removed, want);
    let mut keep = vec![
        "s.tar.zst".to_string(),
        "s.tar.zst.manifest.json".into(),
        "s.tar.zst.sha256".into(),
        format!(".c.tar.zst.tmp-{me}-0b0b0b"),
        "busy.tar.zst.manifest.json".into(),
        "busy.tar.zst.sha256".into(),
        format!(".busy.tar.zst.tmp-{me}-0c0c0c"),
        "notes.txt".into(),
        ".hidden".into(),
        ".x.tmp-notapid-00".into(),
        format!(".y.tmp-{dead}-nothex"),
        "lone.iso.sha256".into(),
        "foreign.manifest.json".into(),
    ];
    keep.sort();
    assert_eq!(names(&b), keep);
    assert!(cleanup_debris(&b).unwrap().is_empty());
    assert!(cleanup_debris(&d.join("nonexistent")).unwrap().is_empty());
}

/// Run by `sigkill_leaves_only_temp_debris` in a child process.
#[test]
#[ignore]
fn child_create_slow() {
    let (Ok(src), Ok(dest)) = (
        std::env::var("HLA_CHILD_SRC"),
        std::env::var("HLA_CHILD_DEST"),
    ) else {
        return;
    };
    create::BEFORE_READ.with(|h| {
        *h.borrow_mut() = Some(Box::new(|_: &Path| {
            std::thread::sleep(Duration::from_millis(100))
        }))
    });
    let _ = mk(Path::new(&dest), "k.tar.zst", &[PathBuf::from(src)], &[]);
}

#[test]
fn sigkill_leaves_only_temp_debris() {
    let sb = TempDir::new().unwrap();
    let src = sb.path().join("tree");
    for i in 0..50 {
        put(&src.join(format!("f{i:02}")), &pseudo_random(10_000), 0o644);
    }
    let dest = sb.path().join("b");
    fs::create_dir(&dest).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "archive::tests::child_create_slow",
            "--test-threads=1",
        ])
        .env("HLA_CHILD_SRC", &src)
        .env("HLA_CHILD_DEST", &dest)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while names(&dest).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "child never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    let left = names(&dest);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with(".k.tar.zst.tmp-"), "{left:?}");
    let removed = cleanup_debris(&dest).unwrap();
    assert_eq!(removed.len(), 1);
    assert_only(&dest, &[]);
}

#[test]
fn a_corrupt_archive_error_keeps_the_decoders_error_as_its_source() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("x.tar.zst");
    fs::write(&p, b"this is not zstd at all").unwrap();
    let err = list(&p).unwrap_err();
    assert_eq!(err.kind(), "unsafe_archive");
    let source = std::error::Error::source(&err).expect("the zstd error is kept");
    assert!(
        source.downcast_ref::<std::io::Error>().is_some(),
        "{source:?}"
    );
}
