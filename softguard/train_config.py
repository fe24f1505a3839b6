"""``TrainConfig``: the hyper-parameters of a training run, read by the objectives (``losses``), the dev evaluation
(``evaluation``) and the loop (``training``), so it sits below all three."""

from __future__ import annotations

from dataclasses import dataclass

from .checks import require

#: Training precisions (``TrainConfig.precision``, ``GuardTrainConfig.precision``): float32 throughout; bfloat16
#: autocast of the trained network's forward and backward; or bf16 where the device computes it natively, else fp32
#: (``models.resolve_precision``).
PRECISIONS = ("fp32", "bf16", "auto")


@dataclass
class TrainConfig:
    """Training hyper-parameters (DESIGN §4 and §8)."""

    objective: str = "tv"  # tv | kl | rkl | jsd | sft | reinforce
    jsd_beta: float = 0.5
    steps: int = 60
    batch_size: int = 8  # examples (reinforce: prompts) per optimizer step, over all processes together
    lr: float = 1e-2
    weight_decay: float = 0.0
    warmup_steps: int = 5
    min_lr_ratio: float = 0.1
    max_grad_norm: float = 1.0
    first_tokens: int = 4  # the first response tokens decide refusal vs compliance ...
    first_token_weight: float = 4.0  # ... so they weigh this much more than later tokens
    # lambda: each example also pays lambda * its weight * -log q(first target token), whatever its length and the
    # objective: the decision (refuse or answer) by cross-entropy, beside the responses (docs/objectives.md §3)
    decision_weight: float = 0.0
    min_weight: float = 1e-3
    eval_every: int = 15
    dev_max_new_tokens: int = 16
    seed: int = 0  # the adapter's initialisation and the batch order (the run's ``seed`` picks the data)
    stratify: bool = True  # every batch holds the refuse and keep examples in their shares of all (``batch_at``)
    shared_prefix: bool = True  # run the rows' common beginning (soft prompt + template head) once per batch
    teacher_topk: int | None = 256  # keep-branch targets: the teacher's top-K + rest, once; None: exact, every step
    # the training step's decoder forward and backward under bf16 autocast (fp32: none); the LM head, the losses, the
    # adapter's weights and optimizer, the teacher targets, dev evaluation and all generation stay float32
    precision: str = "fp32"
    # reinforce only
    rl_samples: int = 2  # K samples per prompt (leave-one-out baseline needs K >= 2)
    rl_max_new_tokens: int = 24
    rl_temperature: float = 1.0
    kl_coef: float = 0.05  # weight of the per-token KL(q || pi) penalty

    def __post_init__(self) -> None:
        """Refuse a value that cannot train (the objective itself is checked by ``check_objective``)."""
        require(
            self,
            {
                "steps": ">= 1",
                "batch_size": ">= 1",
                "lr": "> 0",
                "weight_decay": ">= 0",
                "warmup_steps": ">= 0",
                "min_lr_ratio": "[0, 1]",
                "max_grad_norm": "> 0",
                "first_tokens": ">= 0",
                "first_token_weight": "> 0",
                "decision_weight": ">= 0",
                "min_weight": "[0, 1)",
                "eval_every": ">= 1",
                "dev_max_new_tokens": ">= 1",
                "rl_samples": ">= 1",
                "rl_max_new_tokens": ">= 1",
                "rl_temperature": "> 0",
                "kl_coef": ">= 0",
                "precision": PRECISIONS,
            },
        )
        if self.teacher_topk is not None and self.teacher_topk < 1:
            raise ValueError(f"teacher_topk must be at least 1 (or None: the exact teacher), got {self.teacher_topk}")
