"""The judges of Cosine and Entailment: loading them (``loading``), the model wrappers
(``models``), and the offline NLI judge trained here (``offline``). They sit below evaluation:
evaluation imports them, they import nothing of evaluation."""
