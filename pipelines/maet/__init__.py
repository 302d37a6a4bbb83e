"""MAET: find the neurons an ability or a language uses, train only those, and move the ability into other
languages by arithmetic on the trained deltas.

importance.py  Eq. 1: neuron importance from a probe CPT (|θ' − θ|), top-k1 selection, the NeuronMask
masked.py      masked training: gradients and AdamW updates reach the selected neurons only (KeyNeurons, the
               training core's Restriction: pipelines/training/cpt.py runs every CPT)
cpt.py         the key-neuron mask of a finished probe; a trained model as a sparse delta
decompose.py   Eq. 2: R(A) = α(Θ_{A,L0} − Θ_o) − β(Θ_{L0} − Θ_o), and the language deltas R(L_i)
settings.py    each stage's settings

Sparse deltas and the merge (Eqs. 3–5 and the baselines) are in pipelines/merging/.
"""
