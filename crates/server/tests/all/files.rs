//! The workspace file API: downloads, listings, atomic uploads, tar in and out, delete, and
//! confinement (traversal, absolute paths, symlinks leading out) and size limits.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{error_of, Options, TestApp};

async fn app_with_workspace(upload_limit: Option<u64>) -> (TestApp, PathBuf) {
    let app = TestApp::with(Options {
        upload_limit,
        ..Options::default()
    })
    .await;
    let (status, text) = app
        .send(
            Method::POST,
            "/api/v1/workspaces",
            Some(r#"{"name": "repo"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let dir = app._dir.path().join("workspaces/named/repo");
    (app, dir)
}

fn put(body: &str) -> Vec<u8> {
    body.as_bytes().to_vec()
}

#[tokio::test]
async fn a_set_id_or_world_writable_mode_is_never_given_to_an_uploaded_file() {
    let (app, dir) = app_with_workspace(None).await;
    for (name, asked, expected) in [
        ("suid", "6755", 0o755),
        ("all", "7777", 0o775),
        ("sticky", "1666", 0o664),
        ("plain", "640", 0o640),
    ] {
        let (status, _, body) = app
            .send_typed(
                Method::PUT,
                &format!("/api/v1/workspaces/repo/files/{name}?mode={asked}"),
                "application/octet-stream",
                put("#!/bin/sh\n"),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&body)
        );
        let mode = std::fs::metadata(dir.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode, expected, "{name}: asked {asked}");
    }
}

#[tokio::test]
async fn files_are_uploaded_atomically_downloaded_listed_and_deleted() {
    let (app, dir) = app_with_workspace(None).await;
    let uri = "/api/v1/workspaces/repo/files/src/main.py";
    let (status, _, body) = app
        .send_typed(
            Method::PUT,
            uri,
            "application/octet-stream",
            put("print(1)\n"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"files": 1, "dirs": 0, "symlinks": 0, "bytes": 9})
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("src/main.py")).unwrap(),
        "print(1)\n"
    );
    let (status, _, body) = app
        .send_typed(
            Method::PUT,
            "/api/v1/workspaces/repo/files/run.sh?mode=755",
            "application/octet-stream",
            put("#!/bin/sh\n"),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(
        std::fs::metadata(dir.join("run.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );
    std::os::unix::fs::symlink("src/main.py", dir.join("link")).unwrap();

    let (status, headers, body) = app.send_typed(Method::GET, uri, "", Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(body, b"print(1)\n");
    // The root's listing, with the symlink as a symlink.
    let (status, text) = app
        .send(Method::GET, "/api/v1/workspaces/repo/files", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let listing: Value = serde_json::from_str(&text).unwrap();
    let entries: Vec<(String, String, Value)> = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["kind"].as_str().unwrap().to_owned(),
                e["target"].clone(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        vec![
            ("link".into(), "symlink".into(), json!("src/main.py")),
            ("run.sh".into(), "file".into(), Value::Null),
            ("src".into(), "dir".into(), Value::Null),
        ]
    );
    let (_, text) = app
        .send(Method::GET, "/api/v1/workspaces/repo/files/src", None)
        .await;
    let listing: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(listing["path"], json!("src"));
    assert_eq!(listing["entries"][0]["size"], json!(9));

    // Replacing keeps the old contents until the new ones are whole.
    let (status, _, _) = app
        .send_typed(Method::PUT, uri, "text/plain", put("print(2)\n"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        std::fs::read_to_string(dir.join("src/main.py")).unwrap(),
        "print(2)\n"
    );

    // Delete: a non-empty directory needs recursive; the root cannot go.
    let (status, text) = app
        .send(Method::DELETE, "/api/v1/workspaces/repo/files/src", None)
        .await;
    assert_eq!(
        (status, error_of(&text)),
        (
            StatusCode::CONFLICT,
            (
                "conflict".into(),
                "directory \"src\" is not empty (delete it recursively)".into()
            )
        )
    );
    let (status, _) = app
        .send(Method::DELETE, "/api/v1/workspaces/repo/files/link", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(dir.join("src/main.py").exists(), "the link's target stays");
    let (status, _) = app
        .send(
            Method::DELETE,
            "/api/v1/workspaces/repo/files/src?recursive=true",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!dir.join("src").exists());
    let (status, text) = app
        .send(Method::DELETE, "/api/v1/workspaces/repo/files/src", None)
        .await;
    assert_eq!(
        (status, error_of(&text)),
        (
            StatusCode::NOT_FOUND,
            (
                "not_found".into(),
                "path \"src\" not found in the workspace".into()
            )
        )
    );
    let (status, _) = app
        .send(Method::GET, "/api/v1/workspaces/nope/files/x", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_directory_downloads_as_tar_and_uploads_into_another_workspace() {
    let (app, dir) = app_with_workspace(None).await;
    std::fs::create_dir_all(dir.join("a/empty")).unwrap();
    std::fs::write(dir.join("a/one.txt"), "one").unwrap();
    std::fs::write(dir.join("two.txt"), "two").unwrap();
    std::os::unix::fs::symlink("two.txt", dir.join("a/to-two")).unwrap();
    let (status, headers, tar) = app
        .send_typed(
            Method::GET,
            "/api/v1/workspaces/repo/files?format=tar",
            "",
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/x-tar");
    app.send(
        Method::POST,
        "/api/v1/workspaces",
        Some(r#"{"name": "copy"}"#),
    )
    .await;
    let (status, _, body) = app
        .send_typed(
            Method::PUT,
            "/api/v1/workspaces/copy/files/restored",
            "application/x-tar",
            tar,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"files": 2, "dirs": 2, "symlinks": 1, "bytes": 6})
    );
    let copy = app._dir.path().join("workspaces/named/copy/restored");
    assert_eq!(
        std::fs::read_to_string(copy.join("a/one.txt")).unwrap(),
        "one"
    );
    assert_eq!(
        std::fs::read_to_string(copy.join("two.txt")).unwrap(),
        "two"
    );
    assert!(copy.join("a/empty").is_dir());
    assert_eq!(
        std::fs::read_link(copy.join("a/to-two")).unwrap(),
        PathBuf::from("two.txt")
    );
    // Not a tar: refused naming the body.
    let (status, _, body) = app
        .send_typed(
            Method::PUT,
            "/api/v1/workspaces/copy/files/x",
            "application/x-tar",
            vec![1u8; 1024],
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        String::from_utf8_lossy(&body)
    );
}

#[tokio::test]
async fn paths_leading_out_of_the_workspace_are_refused() {
    let (app, dir) = app_with_workspace(None).await;
    let outside = app._dir.path().join("secret");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("key"), "s3cr3t").unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("out")).unwrap();
    std::os::unix::fs::symlink("../../../secret", dir.join("up")).unwrap();
    let cases = [
        (
            Method::GET,
            "/api/v1/workspaces/repo/files/../../secret/key",
        ),
        (
            Method::GET,
            "/api/v1/workspaces/repo/files/%2e%2e/%2e%2e/secret/key",
        ),
        (Method::GET, "/api/v1/workspaces/repo/files/out/key"),
        (Method::GET, "/api/v1/workspaces/repo/files/up/key"),
        (Method::GET, "/api/v1/workspaces/repo/files//etc/passwd"),
        (Method::PUT, "/api/v1/workspaces/repo/files/out/key"),
        (Method::PUT, "/api/v1/workspaces/repo/files/%2e%2e/x"),
        (Method::DELETE, "/api/v1/workspaces/repo/files/out/key"),
        (
            Method::DELETE,
            "/api/v1/workspaces/repo/files/%2e%2e/secret",
        ),
    ];
    for (method, uri) in cases {
        let (status, text) = app.send(method.clone(), uri, None).await;
        assert_eq!(
            (status, error_of(&text).0.as_str()),
            (StatusCode::BAD_REQUEST, "invalid_path"),
            "{method} {uri}: {text}"
        );
    }
    let (_, text) = app
        .send(Method::GET, "/api/v1/workspaces/repo/files/out/key", None)
        .await;
    assert_eq!(
        error_of(&text).1,
        "path \"out/key\" leads out of the workspace through a symlink"
    );
    // Nothing outside was read, written or removed.
    assert_eq!(
        std::fs::read_to_string(outside.join("key")).unwrap(),
        "s3cr3t"
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
    // A tar whose entries lead out is refused too.
    let mut tar = Vec::new();
    {
        let mut header = [0u8; 512];
        let name = b"../escape.txt";
        header[..name.len()].copy_from_slice(name);
        header[100..108].copy_from_slice(b"0000644\0");
        header[108..116].copy_from_slice(b"0000000\0");
        header[116..124].copy_from_slice(b"0000000\0");
        header[124..136].copy_from_slice(b"00000000001\0");
        header[136..148].copy_from_slice(b"00000000000\0");
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        tar.extend_from_slice(&header);
        let mut data = [0u8; 512];
        data[0] = b'x';
        tar.extend_from_slice(&data);
        tar.extend_from_slice(&[0u8; 1024]);
    }
    let (status, _, body) = app
        .send_typed(
            Method::PUT,
            "/api/v1/workspaces/repo/files",
            "application/x-tar",
            tar,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(!app._dir.path().join("workspaces/named/escape.txt").exists());
}

#[tokio::test]
async fn uploads_over_the_limit_are_413_and_leave_the_old_file() {
    let (app, dir) = app_with_workspace(Some(10)).await;
    let uri = "/api/v1/workspaces/repo/files/f";
    let (status, _, _) = app
        .send_typed(Method::PUT, uri, "text/plain", put("0123456789"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, body) = app
        .send_typed(Method::PUT, uri, "text/plain", put("0123456789A"))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        error_of(std::str::from_utf8(&body).unwrap()),
        (
            "payload_too_large".into(),
            "request body is larger than the limit of 10 bytes".into()
        )
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("f")).unwrap(),
        "0123456789"
    );
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    // A tar whose files add up to more than the limit.
    std::fs::write(dir.join("big"), "x".repeat(20)).unwrap();
    let (_, _, tar) = app
        .send_typed(
            Method::GET,
            "/api/v1/workspaces/repo/files?format=tar",
            "",
            Vec::new(),
        )
        .await;
    let (status, _, _) = app
        .send_typed(
            Method::PUT,
            "/api/v1/workspaces/repo/files/sub",
            "application/x-tar",
            tar,
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_file_changed_underneath_is_never_overwritten_or_deleted_by_a_stale_version() {
    let (app, dir) = app_with_workspace(None).await;
    let url = "/api/v1/workspaces/repo/files/src/main.py";
    let octets = ("content-type", "application/octet-stream");
    // Created only where nothing is: If-None-Match: *.
    let (status, headers, _) = app
        .send_with(
            Method::PUT,
            url,
            &[octets, ("if-none-match", "*")],
            put("v1\n"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let created = headers["etag"].to_str().unwrap().to_owned();
    let (status, _, body) = app
        .send_with(
            Method::PUT,
            url,
            &[octets, ("if-none-match", "*")],
            put("again\n"),
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        error_of(&String::from_utf8_lossy(&body)).0,
        "precondition_failed"
    );
    // A download gives the same version; a write with it succeeds and gives a new one.
    let (status, headers, body) = app.send_with(Method::GET, url, &[], Vec::new()).await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, b"v1\n".as_slice())
    );
    assert_eq!(headers["etag"].to_str().unwrap(), created);
    let (status, headers, _) = app
        .send_with(
            Method::PUT,
            url,
            &[octets, ("if-match", &created)],
            put("v2\n"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let second = headers["etag"].to_str().unwrap().to_owned();
    assert_ne!(second, created);
    // Someone changes the file (a task, an editor): the stale version writes nothing.
    std::fs::write(dir.join("src/main.py"), "by a task\n").unwrap();
    let (status, _, body) = app
        .send_with(
            Method::PUT,
            url,
            &[octets, ("if-match", &second)],
            put("v3\n"),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("src/main.py")).unwrap(),
        "by a task\n"
    );
    let (status, _, _) = app
        .send_with(Method::DELETE, url, &[("if-match", &second)], Vec::new())
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert!(dir.join("src/main.py").exists());
    // With the current version, the delete goes through; If-Match on nothing is 412.
    let (_, headers, _) = app.send_with(Method::GET, url, &[], Vec::new()).await;
    let current = headers["etag"].to_str().unwrap().to_owned();
    let (status, _, _) = app
        .send_with(Method::DELETE, url, &[("if-match", &current)], Vec::new())
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = app
        .send_with(Method::PUT, url, &[octets, ("if-match", "*")], put("x\n"))
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert!(!dir.join("src/main.py").exists());
    // Junk in the header, or a precondition on a tar, is a 400 that says what to send.
    let (status, _, body) = app
        .send_with(Method::PUT, url, &[octets, ("if-match", "v2")], put("x\n"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(&String::from_utf8_lossy(&body)).0,
        "invalid_header"
    );
    let (status, _, _) = app
        .send_with(
            Method::PUT,
            "/api/v1/workspaces/repo/files/dir",
            &[("content-type", "application/x-tar"), ("if-match", "*")],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
