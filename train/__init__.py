"""Lightning side of distilprune: the command line (cli), the pipeline that orders a run, its stages
(teacher_stage, distill_stage), processes and run directory (ranks), Trainer and W&B (trainer),
resume, and the LightningModules, DataModule and callbacks."""
