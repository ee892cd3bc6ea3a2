"""On student-teacher deviations in distillation: does it pay to disobey? (Nagarajan, Menon,
Bhojanapalli, Mobahi, Kumar; NeurIPS 2023, arXiv:2301.12923).

Self-distillation (teacher and student share the architecture) of small MLPs on sklearn's
bundled digits. A teacher is trained with one-hot cross-entropy; students from fresh
initializations are trained (full batch, Adam) with one-hot labels, with the distillation
loss throughout, or with one-hot labels first and the distillation loss after a switch
point. Reported: test accuracies and gains over one-hot; and the confidence deviation
student - teacher (probability on the label) on the points the teacher is least and most
confident about, on training and test data. The paper's claim: the student exaggerates the
teacher's confidence, in particular it is even less confident where the teacher is unsure;
and switching to distillation mid-training recovers much of its gain.

Second experiment (the paper's "exaggerated implicit bias" in a simple setting): a linear
softmax teacher is trained by full-batch gradient descent from zero on the same (noisy)
labels, and a linear student by the same GD on the teacher's probabilities. Along each
eigendirection v_i of the training inputs' second-moment matrix the ratio
||v_i^T W_student|| / ||v_i^T W_teacher|| measures how far the student got relative to the
teacher. If distillation exaggerates GD's bias towards the top eigendirections, the ratio is
near 1 along the top directions and clearly smaller along the bottom ones (for squared loss
it is exactly 1 - (1 - eta lambda_i)^T; with cross-entropy it is an empirical question).
"""
from __future__ import annotations

from pydantic import Field, model_validator

from registry.methods import MethodConfig, Strict, register

N_DIGITS = 1797  # sklearn load_digits


class Data(Strict):
    n_train: int = Field(300, ge=20)  # per-seed training subset of the 1797 digits
    n_test: int = Field(797, ge=10)  # fixed test set (eval seed)
    label_noise: float = Field(0.0, ge=0, lt=1)  # probability that a training label is flipped

    @model_validator(mode="after")
    def _fits_in_digits(self):
        if self.n_train + self.n_test > N_DIGITS:
            raise ValueError(f"n_train + n_test = {self.n_train + self.n_test} exceeds the {N_DIGITS} digits "
                             "(the training subset is drawn from the images outside the test set)")
        return self


class Model(Strict):
    hidden: int = Field(64, ge=1)
    depth: int = Field(1, ge=1)  # hidden layers


class Train(Strict):
    steps: int = Field(300, ge=1)  # full-batch Adam steps for teacher and every student
    lr: float = Field(0.01, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    temperature: float = Field(1.0, gt=0)  # distillation temperature (MLP and linear students)
    switch_frac: float = Field(0.5, ge=0, le=1)  # one-hot for this fraction of steps, then KD
    n_students: int = Field(3, ge=1)  # student initializations per strategy (averaged)
    low_q: float = Field(0.1, gt=0, lt=1)  # teacher-confidence quantile for "unsure" points
    high_q: float = Field(0.5, gt=0, lt=1)
    # Eigendirection experiment (linear softmax models, full-batch GD from zero, step lr_scale / lambda_max)
    linear_steps: int = Field(300, ge=1)
    linear_lr_scale: float = Field(1.0, gt=0, le=2.0)
    eigen_frac: float = Field(0.25, gt=0, le=0.5)  # fraction of eigendirections in the "top" and "bottom" groups
    log_every: int = Field(50, ge=1)


class Config(MethodConfig):
    data: Data = Data()
    model: Model = Model()
    train: Train = Train()


@register("student-teacher-deviations-kd", config=Config)
def run(cfg: Config, ctx) -> dict[str, float]:
    from .train import run_all  # torch is imported lazily

    return run_all(cfg, ctx)
