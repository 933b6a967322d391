"""CX-Mind-style curriculum training (SFT -> cold start -> GRPO closed -> GRPO open) with verifiable
process rewards, on TRL; see README.md in this folder. Run its modules from the repository root
(``python -m reference_training.run``, ``python -m reference_training.toy``)."""
