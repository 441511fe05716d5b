import BPFKernel
print("bpflab")
