"""The MaskGWM trainer: stages 1a-3 as configs, DDP/FSDP, exact resume, metrics (docs/DESIGN.md 2).

Entry points: `maskgwm.train.trainer.Trainer`, `maskgwm.train.options.TrainOptions`,
`python -m maskgwm.train STAGE ...` (`maskgwm.train.cli`), `python -m maskgwm.train.bench`.
"""
