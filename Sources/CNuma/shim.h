// libnuma (Debian: libnuma-dev). numa_available() must be called, and return >= 0,
// before any other libnuma function is used.
#include <numa.h>
