// glibc's <malloc.h>, which Swift's Glibc module leaves out: mallopt() tunes when freed
// memory goes back to the kernel (see keepFreedMemory() in the executables).
#include <malloc.h>

// M_TRIM_THRESHOLD is a plain #define; spelled out as a constant so Swift sees its type.
static const int cmalloc_trim_threshold = M_TRIM_THRESHOLD;
