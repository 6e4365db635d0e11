/* discovery/internal.h - helpers shared by the files of faas-discovery only. */
#ifndef DISC_INTERNAL_H
#define DISC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Replaces an unpacked protobuf string field with a malloc'd copy of v; 0 or -1. */
int disc_set_str(char **field, const char *v);

#endif
