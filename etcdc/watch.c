/* etcdc/watch.c - watches (placeholder until the stream is written). */
#include "etcdc/internal.h"

void ec_watch_stop_all(etcdc_t *c)
{
    (void)c;
}
