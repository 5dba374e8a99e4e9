//! A fake upstream on its own, for trying an agent CLI by hand (inside a sandbox too): plays a
//! demo script that writes `hello.txt` in the working directory, edits it, shows it, and ends;
//! prints the port, then each request as it comes.
//!
//! `cargo run -p conductor-agents --features fake --example fake_upstream -- anthropic|openai`

use std::time::Duration;

use conductor_agents::fake::{AnthropicFake, OpenAiFake, Script, Turn};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let kind = std::env::args().nth(1).unwrap_or_default();
    let cwd = std::env::current_dir()?;
    let file = cwd.join("hello.txt");
    let fake =
        match kind.as_str() {
            "anthropic" => AnthropicFake::start(Script::new([
                Turn::tool("Write", json!({"file_path": file, "content": "hello\n"}))
                    .tokens(100, 20),
                Turn::tool(
                    "Edit",
                    json!({"file_path": file, "old_string": "hello", "new_string": "hello world"}),
                )
                .tokens(120, 30),
                Turn::tool(
                    "Bash",
                    json!({"command": "cat hello.txt", "description": "Show"}),
                )
                .tokens(140, 10),
                Turn::text("Done.").tokens(160, 12),
            ]))
            .await?,
            "openai" => {
                OpenAiFake::start(Script::new([
                    Turn::tool(
                        "exec_command",
                        json!({"cmd": "printf 'hello\\n' > hello.txt"}),
                    )
                    .tokens(100, 20),
                    Turn::tool(
                        "exec_command",
                        json!({"cmd": "sed -i 's/hello/hello world/' hello.txt && cat hello.txt"}),
                    )
                    .tokens(120, 30),
                    Turn::text("Done.").tokens(150, 10),
                ]))
                .await?
            }
            _ => return Err("usage: fake_upstream anthropic|openai".into()),
        };
    println!("{}", fake.port());
    let mut seen = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let requests = fake.requests();
        for request in &requests[seen..] {
            eprintln!("{} {} {:?}", request.method, request.path, request.kind);
        }
        seen = requests.len();
    }
}
