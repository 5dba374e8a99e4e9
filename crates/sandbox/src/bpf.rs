//! A tiny assembler for classic BPF, the language of seccomp filters: instructions with
//! symbolic jump targets, resolved to the 8-bit forward offsets the kernel wants, and an
//! interpreter so tests can run a program on any input without installing it.

/// A seccomp-visible instruction.
pub type Instruction = libc::sock_filter;

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JMP_JA: u16 = 0x05; // BPF_JMP | BPF_JA
const JMP_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JMP_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JMP_JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

/// Where a jump goes: the next instruction, or a label placed with [`Assembler::label`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Fall through.
    Next,
    /// A label.
    Label(usize),
}

/// A program too large for 8-bit jump offsets, or with a label never placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("assembling the BPF program: {0}")]
pub struct AssembleError(String);

#[derive(Debug, Clone, Copy)]
enum Op {
    Load(u32),
    Jump(u16, u32, Target, Target),
    Always(usize),
    Return(u32),
}

/// Builds a program; labels are numbers handed out by [`Assembler::new_label`].
#[derive(Debug, Default)]
pub struct Assembler {
    ops: Vec<Op>,
    labels: Vec<Option<usize>>,
}

impl Assembler {
    /// A new, unplaced label.
    pub fn new_label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }

    /// Places `label` at the next instruction.
    pub fn label(&mut self, label: usize) {
        self.labels[label] = Some(self.ops.len());
    }

    /// `A = data[offset]` (32 bits).
    pub fn load(&mut self, offset: u32) {
        self.ops.push(Op::Load(offset));
    }

    /// `if A == k goto yes else goto no`.
    pub fn jump_eq(&mut self, k: u32, yes: Target, no: Target) {
        self.ops.push(Op::Jump(JMP_JEQ_K, k, yes, no));
    }

    /// `if A >= k (unsigned) goto yes else goto no`.
    pub fn jump_ge(&mut self, k: u32, yes: Target, no: Target) {
        self.ops.push(Op::Jump(JMP_JGE_K, k, yes, no));
    }

    /// `if A & k != 0 goto yes else goto no`.
    pub fn jump_set(&mut self, k: u32, yes: Target, no: Target) {
        self.ops.push(Op::Jump(JMP_JSET_K, k, yes, no));
    }

    /// `goto label`.
    pub fn jump(&mut self, label: usize) {
        self.ops.push(Op::Always(label));
    }

    /// `return k`.
    pub fn ret(&mut self, k: u32) {
        self.ops.push(Op::Return(k));
    }

    /// Resolves the labels into forward offsets.
    pub fn finish(self) -> Result<Vec<Instruction>, AssembleError> {
        let resolve = |pc: usize, target: Target| -> Result<usize, AssembleError> {
            let to = match target {
                Target::Next => pc + 1,
                Target::Label(label) => self
                    .labels
                    .get(label)
                    .copied()
                    .flatten()
                    .ok_or_else(|| AssembleError(format!("label {label} is never placed")))?,
            };
            to.checked_sub(pc + 1)
                .ok_or_else(|| AssembleError(format!("instruction {pc} jumps backwards")))
        };
        let short = |offset: usize| {
            u8::try_from(offset)
                .map_err(|_| AssembleError(format!("a jump of {offset} does not fit in 8 bits")))
        };
        let instruction = |code: u16, jt: u8, jf: u8, k: u32| Instruction { code, jt, jf, k };
        self.ops
            .iter()
            .enumerate()
            .map(|(pc, op)| match *op {
                Op::Load(offset) => Ok(instruction(LD_W_ABS, 0, 0, offset)),
                Op::Jump(code, k, yes, no) => Ok(instruction(
                    code,
                    short(resolve(pc, yes)?)?,
                    short(resolve(pc, no)?)?,
                    k,
                )),
                Op::Always(label) => {
                    let offset = resolve(pc, Target::Label(label))?;
                    let offset = u32::try_from(offset)
                        .map_err(|_| AssembleError("program too long".to_owned()))?;
                    Ok(instruction(JMP_JA, 0, 0, offset))
                }
                Op::Return(k) => Ok(instruction(RET_K, 0, 0, k)),
            })
            .collect()
    }
}

/// Runs `program` on `data` (the bytes the kernel would hand it), returning what it returns, or
/// `None` for an instruction it does not know or a run off the end.
pub fn run(program: &[Instruction], data: &[u8]) -> Option<u32> {
    let mut a = 0u32;
    let mut pc = 0usize;
    loop {
        let insn = program.get(pc)?;
        pc += 1;
        let jump = |taken: bool| usize::from(if taken { insn.jt } else { insn.jf });
        match insn.code {
            LD_W_ABS => {
                let at = usize::try_from(insn.k).ok()?;
                a = u32::from_ne_bytes(data.get(at..at + 4)?.try_into().ok()?);
            }
            JMP_JEQ_K => pc += jump(a == insn.k),
            JMP_JGE_K => pc += jump(a >= insn.k),
            JMP_JSET_K => pc += jump(a & insn.k != 0),
            JMP_JA => pc += usize::try_from(insn.k).ok()?,
            RET_K => return Some(insn.k),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_resolve_to_forward_offsets_and_the_interpreter_follows_them() {
        let mut asm = Assembler::default();
        let big = asm.new_label();
        asm.load(0);
        asm.jump_ge(10, Target::Label(big), Target::Next);
        asm.jump_set(1, Target::Next, Target::Label(big));
        asm.ret(1); // odd and small
        asm.label(big);
        asm.ret(2);
        let program = asm.finish().unwrap();
        assert_eq!((program[1].jt, program[1].jf), (2, 0));
        assert_eq!((program[2].jt, program[2].jf), (0, 1));
        let run_on = |n: u32| run(&program, &n.to_ne_bytes());
        assert_eq!(run_on(3), Some(1));
        assert_eq!(run_on(4), Some(2));
        assert_eq!(run_on(11), Some(2));
    }

    #[test]
    fn unplaced_labels_and_long_jumps_are_refused() {
        let mut asm = Assembler::default();
        let nowhere = asm.new_label();
        asm.jump_eq(0, Target::Label(nowhere), Target::Next);
        assert!(asm.finish().is_err());

        let mut asm = Assembler::default();
        let far = asm.new_label();
        asm.jump_eq(0, Target::Label(far), Target::Next);
        for _ in 0..300 {
            asm.ret(0);
        }
        asm.label(far);
        asm.ret(1);
        assert!(asm.finish().is_err());
    }
}
