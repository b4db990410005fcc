"""Fine-tuning strategies (weights change): LoRA, IA3, prompt tuning and full fine-tuning (peft/transformers on
accelerate, through one training recipe), and the embedding probe (MiniLM + logistic regression). Importing a
strategy module registers it; heavy libraries load only when a method runs."""
