//! Agent tasks as requests (issue 12): which fields they take, what their prompt is (the seed's
//! task types go through templates), and their defaults. Pure: no I/O.

use std::collections::BTreeMap;

use conductor_types::{AgentKind, AgentSpec, Budget, TaskType};

use crate::task::SpecError;

/// Longest prompt accepted (bytes).
pub const MAX_PROMPT_BYTES: usize = 256 * 1024;
/// Most turns an agent task may ask for.
pub const MAX_TURNS: u32 = 1000;
/// Most `files` a seed-type task may name.
pub const MAX_FILES: usize = 100;
/// The permission modes Claude Code knows.
pub const PERMISSION_MODES: [&str; 5] = [
    "default",
    "acceptEdits",
    "plan",
    "bypassPermissions",
    "dontAsk",
];

/// The prompt of each seed task type, with `{description}` and `{files}` filled in. The server
/// takes overrides from its config (`[agents.templates]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTemplates(BTreeMap<TaskType, String>);

impl Default for PromptTemplates {
    fn default() -> Self {
        let built_in = [
            (TaskType::CodeReview, "Review the code in this repository and report problems: bugs, security issues, unclear code, missing tests. Do not change any file. Focus: {description}\n{files}"),
            (TaskType::Refactor, "Refactor the code in this repository without changing its behaviour, and keep its tests passing. Goal: {description}\n{files}"),
            (TaskType::TestGeneration, "Write tests for the code in this repository, run them, and make sure they pass. What to test: {description}\n{files}"),
            (TaskType::Analysis, "Analyse the code in this repository and answer in a short report. Do not change any file. Question: {description}\n{files}"),
            (TaskType::Generic, "{description}\n{files}"),
        ];
        Self(
            built_in
                .into_iter()
                .map(|(kind, text)| (kind, text.to_owned()))
                .collect(),
        )
    }
}

impl PromptTemplates {
    /// The built-in templates with `overrides` (by the task type's API name) replacing some.
    pub fn with_overrides(overrides: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut templates = Self::default();
        for (name, text) in overrides {
            let kind = templates
                .0
                .keys()
                .copied()
                .find(|kind| type_name(*kind) == name)
                .ok_or_else(|| {
                    format!("unknown task type {name:?}: templates exist for code_review, refactor, test_generation, analysis and generic")
                })?;
            if !text.contains("{description}") {
                return Err(format!(
                    "the template of {name} does not contain {{description}}"
                ));
            }
            templates.0.insert(kind, text.clone());
        }
        Ok(templates)
    }

    /// The prompt of a seed-type task.
    pub fn render(&self, kind: TaskType, description: &str, files: &[String]) -> String {
        let files = if files.is_empty() {
            String::new()
        } else {
            format!("Files: {}", files.join(", "))
        };
        let template = self
            .0
            .get(&kind)
            .map_or("{description}\n{files}", String::as_str);
        template
            .replace("{files}", &files)
            .replace("{description}", description)
            .trim_end()
            .to_owned()
    }
}

fn type_name(kind: TaskType) -> &'static str {
    match kind {
        TaskType::IsolatedExecution => "isolated_execution",
        TaskType::Command => "command",
        TaskType::Agent => "agent",
        TaskType::CodeReview => "code_review",
        TaskType::Refactor => "refactor",
        TaskType::TestGeneration => "test_generation",
        TaskType::Analysis => "analysis",
        TaskType::Generic => "generic",
    }
}

/// The agent fields of a request, before validation.
#[derive(Debug, Clone, Default)]
pub struct AgentFields {
    /// `agent`.
    pub agent: Option<AgentSpec>,
    /// `budget`.
    pub budget: Option<Budget>,
    /// `files`.
    pub files: Option<Vec<String>>,
    /// `description`.
    pub description: Option<String>,
    /// Whether `commands` was given (and not empty).
    pub has_commands: bool,
}

/// The agent fields of a request, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidAgent {
    /// The agent, its prompt resolved.
    pub spec: AgentSpec,
    /// Its budget.
    pub budget: Option<Budget>,
    /// The files a seed-type task is about.
    pub files: Vec<String>,
}

/// The agent of a task, validated, with its prompt resolved; `None` for a command task (which
/// must then carry no agent field).
pub fn validate_agent(
    task_type: TaskType,
    fields: AgentFields,
    templates: &PromptTemplates,
) -> Result<Option<ValidAgent>, SpecError> {
    if !task_type.is_agent() {
        for (given, name) in [
            (fields.agent.is_some(), "agent"),
            (fields.budget.is_some(), "budget"),
            (fields.files.is_some(), "files"),
        ] {
            if given {
                return Err(SpecError::invalid(
                    name,
                    "is only for agent tasks (task_type \"agent\", \"code_review\", \"refactor\", \"test_generation\", \"analysis\" or \"generic\")",
                ));
            }
        }
        return Ok(None);
    }
    if fields.has_commands {
        return Err(SpecError::invalid(
            "commands",
            "an agent task runs an agent, not commands: give `agent.prompt` (or `description` for the seed's task types) and no `commands`",
        ));
    }
    let files = validate_files(fields.files.unwrap_or_default())?;
    let mut agent = resolve_prompt(
        task_type,
        fields.agent,
        fields.description,
        &files,
        templates,
    )?;
    validate_spec(&mut agent)?;
    if let Some(budget) = &fields.budget {
        validate_budget(budget)?;
    }
    Ok(Some(ValidAgent {
        spec: agent,
        budget: fields.budget,
        files,
    }))
}

fn resolve_prompt(
    task_type: TaskType,
    agent: Option<AgentSpec>,
    description: Option<String>,
    files: &[String],
    templates: &PromptTemplates,
) -> Result<AgentSpec, SpecError> {
    if task_type == TaskType::Agent {
        let agent = agent.ok_or_else(|| {
            SpecError::invalid(
                "agent",
                "is missing: an agent task needs {\"kind\": \"claude-code\", \"prompt\": \"…\"}",
            )
        })?;
        if agent.prompt.trim().is_empty() {
            return Err(SpecError::invalid("agent.prompt", "is empty"));
        }
        return Ok(agent);
    }
    let description = description
        .filter(|d| !d.trim().is_empty())
        .ok_or_else(|| {
            SpecError::invalid(
                "description",
                "is missing: the seed's agent task types take what to do from `description`",
            )
        })?;
    let mut agent = agent.unwrap_or_else(|| AgentSpec {
        kind: AgentKind::ClaudeCode,
        prompt: String::new(),
        model: None,
        max_turns: None,
        allowed_tools: None,
        permission_mode: None,
        system_prompt: None,
    });
    let rendered = templates.render(task_type, &description, files);
    agent.prompt = if agent.prompt.trim().is_empty() {
        rendered
    } else {
        format!("{rendered}\n\n{}", agent.prompt)
    };
    Ok(agent)
}

fn validate_spec(agent: &mut AgentSpec) -> Result<(), SpecError> {
    if agent.prompt.len() > MAX_PROMPT_BYTES || agent.prompt.contains('\0') {
        return Err(SpecError::invalid(
            "agent.prompt",
            "is longer than 256 KiB or contains a NUL byte",
        ));
    }
    if let Some(model) = &agent.model {
        let valid = !model.is_empty()
            && model.len() <= 128
            && model
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-:/@[]".contains(&b));
        if !valid {
            return Err(SpecError::invalid(
                "agent.model",
                "must be 1 to 128 of A-Z a-z 0-9 . _ - : / @ [ ]",
            ));
        }
    }
    if let Some(turns) = agent.max_turns {
        if turns == 0 || turns > MAX_TURNS {
            return Err(SpecError::invalid(
                "agent.max_turns",
                format!("must be 1 to {MAX_TURNS}"),
            ));
        }
    }
    if let Some(mode) = &agent.permission_mode {
        if !PERMISSION_MODES.contains(&mode.as_str()) {
            return Err(SpecError::invalid(
                "agent.permission_mode",
                format!("must be one of {}", PERMISSION_MODES.join(", ")),
            ));
        }
    }
    for (index, tool) in agent.allowed_tools.iter().flatten().enumerate() {
        if tool.is_empty() || tool.len() > 256 || tool.chars().any(char::is_control) {
            return Err(SpecError::invalid(
                format!("agent.allowed_tools[{index}]"),
                "must be 1 to 256 characters without control characters",
            ));
        }
    }
    if let Some(system) = &agent.system_prompt {
        if system.len() > MAX_PROMPT_BYTES || system.contains('\0') {
            return Err(SpecError::invalid(
                "agent.system_prompt",
                "is longer than 256 KiB or contains a NUL byte",
            ));
        }
    }
    Ok(())
}

fn validate_files(files: Vec<String>) -> Result<Vec<String>, SpecError> {
    if files.len() > MAX_FILES {
        return Err(SpecError::invalid(
            "files",
            format!("lists more than {MAX_FILES} files"),
        ));
    }
    for (index, file) in files.iter().enumerate() {
        if file.is_empty() || file.len() > 4096 || file.chars().any(char::is_control) {
            return Err(SpecError::invalid(
                format!("files[{index}]"),
                "must be a path of 1 to 4096 characters without control characters",
            ));
        }
    }
    Ok(files)
}

fn validate_budget(budget: &Budget) -> Result<(), SpecError> {
    if budget.tokens == Some(0) {
        return Err(SpecError::invalid("budget.tokens", "must be above zero"));
    }
    if let Some(usd) = budget.usd {
        if !usd.is_finite() || usd <= 0.0 || usd > 1_000_000.0 {
            return Err(SpecError::invalid(
                "budget.usd",
                "must be above zero and at most 1000000",
            ));
        }
    }
    Ok(())
}

/// The environment an agent task runs in when the request names none.
pub fn default_environment(kind: AgentKind) -> &'static str {
    match kind {
        AgentKind::ClaudeCode => "claude-code",
        AgentKind::Codex => "codex",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(prompt: &str) -> AgentSpec {
        AgentSpec {
            kind: AgentKind::ClaudeCode,
            prompt: prompt.to_owned(),
            model: None,
            max_turns: None,
            allowed_tools: None,
            permission_mode: None,
            system_prompt: None,
        }
    }

    fn fields(agent: Option<AgentSpec>) -> AgentFields {
        AgentFields {
            agent,
            ..AgentFields::default()
        }
    }

    #[test]
    fn command_tasks_refuse_agent_fields() {
        let templates = PromptTemplates::default();
        let error =
            validate_agent(TaskType::Command, fields(Some(spec("x"))), &templates).unwrap_err();
        assert_eq!(error.field, "agent");
        assert_eq!(
            validate_agent(TaskType::Command, AgentFields::default(), &templates).unwrap(),
            None
        );
    }

    #[test]
    fn agent_tasks_need_a_prompt_and_no_commands() {
        let templates = PromptTemplates::default();
        let missing = validate_agent(TaskType::Agent, fields(None), &templates).unwrap_err();
        assert_eq!(missing.field, "agent");
        let empty = validate_agent(TaskType::Agent, fields(Some(spec(" "))), &templates);
        assert_eq!(empty.unwrap_err().field, "agent.prompt");
        let mut with_commands = fields(Some(spec("go")));
        with_commands.has_commands = true;
        let error = validate_agent(TaskType::Agent, with_commands, &templates).unwrap_err();
        assert_eq!(error.field, "commands");
        let valid = validate_agent(TaskType::Agent, fields(Some(spec("go"))), &templates)
            .unwrap()
            .unwrap();
        assert_eq!(valid.spec.prompt, "go");
    }

    #[test]
    fn seed_types_render_their_template() {
        let templates = PromptTemplates::default();
        let request = AgentFields {
            description: Some("the parser".into()),
            files: Some(vec!["src/parse.rs".into()]),
            ..AgentFields::default()
        };
        let valid = validate_agent(TaskType::CodeReview, request, &templates)
            .unwrap()
            .unwrap();
        let (agent, files) = (valid.spec, valid.files);
        assert_eq!(agent.kind, AgentKind::ClaudeCode);
        assert!(
            agent.prompt.starts_with("Review the code"),
            "{}",
            agent.prompt
        );
        assert!(agent.prompt.contains("Focus: the parser"));
        assert!(agent.prompt.ends_with("Files: src/parse.rs"));
        assert_eq!(files, ["src/parse.rs"]);
        let no_description = validate_agent(TaskType::Refactor, AgentFields::default(), &templates);
        assert_eq!(no_description.unwrap_err().field, "description");
    }

    #[test]
    fn templates_can_be_overridden_by_name() {
        let overrides = BTreeMap::from([("analysis".to_owned(), "Q: {description}".to_owned())]);
        let templates = PromptTemplates::with_overrides(&overrides).unwrap();
        assert_eq!(templates.render(TaskType::Analysis, "why?", &[]), "Q: why?");
        let unknown = BTreeMap::from([("nope".to_owned(), "{description}".to_owned())]);
        assert!(PromptTemplates::with_overrides(&unknown).is_err());
        let no_placeholder = BTreeMap::from([("generic".to_owned(), "hi".to_owned())]);
        assert!(PromptTemplates::with_overrides(&no_placeholder).is_err());
    }

    #[test]
    fn fields_are_bounded() {
        let templates = PromptTemplates::default();
        let check = |edit: fn(&mut AgentSpec)| {
            let mut agent = spec("go");
            edit(&mut agent);
            validate_agent(TaskType::Agent, fields(Some(agent)), &templates)
                .unwrap_err()
                .field
        };
        assert_eq!(check(|a| a.model = Some("a b".into())), "agent.model");
        assert_eq!(check(|a| a.max_turns = Some(0)), "agent.max_turns");
        assert_eq!(
            check(|a| a.permission_mode = Some("yolo".into())),
            "agent.permission_mode"
        );
        assert_eq!(
            check(|a| a.allowed_tools = Some(vec!["\n".into()])),
            "agent.allowed_tools[0]"
        );
        let budget = AgentFields {
            agent: Some(spec("go")),
            budget: Some(Budget {
                tokens: Some(0),
                usd: None,
            }),
            ..AgentFields::default()
        };
        let error = validate_agent(TaskType::Agent, budget, &templates).unwrap_err();
        assert_eq!(error.field, "budget.tokens");
    }
}
