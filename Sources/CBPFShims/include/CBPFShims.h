// Umbrella header of the CBPFShims module.
#include "cbpf_atomic.h"
#include "cbpf_records.h"
#include "cbpf_sys.h"
