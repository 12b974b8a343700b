"""The Neuron backend: transformers-neuronx models behind the slot contract of
:mod:`djl_python.backends.base`.

Modules, each importing only those listed before it: :mod:`.devices` (NeuronCores
visible to this process), :mod:`.versions` (what each transformers-neuronx release
can do), :mod:`.plan` (the load plan from configuration or compiled artifacts),
:mod:`.loader` (import, build, compile or load graphs), :mod:`.backend` (state shared
by the strategies), :mod:`.strategies` (continuous batching, naive rolling batch),
and :mod:`.load` (from configuration and artifacts to a running strategy).

Importing this package imports nothing heavy; transformers-neuronx loads with
:mod:`.loader`.
"""
