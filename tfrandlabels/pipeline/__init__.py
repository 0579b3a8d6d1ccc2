"""The pipeline: stages (pretrain, finetune, analyze, report), their artifacts and the report."""
