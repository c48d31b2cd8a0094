// Carving one arena into named views, in two passes: with base == NULL the pass only counts bytes
// (the arena's size), with the allocation as base it assigns the same offsets. Nothing is dereferenced,
// so the arena may be device memory. Every view starts on an `align`-byte boundary (a power of two).
#ifndef ASA_CORE_CARVE_H
#define ASA_CORE_CARVE_H

#include <stddef.h>

typedef struct {
    char *base;
    size_t off;
    size_t align;
    size_t act_size;  // bytes per activation element (be->act) for the caller's activation views
} asa_carver;

static inline void *asa_carve(asa_carver *cv, size_t bytes) {
    void *p = cv->base ? cv->base + cv->off : NULL;
    cv->off += (bytes + cv->align - 1) & ~(cv->align - 1);
    return p;
}

#endif
