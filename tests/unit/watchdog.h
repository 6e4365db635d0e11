/* tests/unit/watchdog.h - a bound on a test's run, kept by the test's own process.
 *
 * Criterion's .timeout is not used: Debian's libcriterion3 carries BoxFort, whose
 * timeout records race their cancellation when tests run side by side (--jobs=2), and
 * now and then one is lost. LeakSanitizer then fails the runner at exit (`make
 * unit-asan`): 3 of 8 runs of discovery's tasks_etcd suite, 0 of 10 without .timeout.
 *
 * UNIT_WATCHDOG(s) at the start of a test (or of a suite's .init, to cover every test of
 * the suite with its fixtures) arms SIGALRM; a test still running s seconds later says
 * so on stderr and dies of it, which Criterion reports as a crash of that test. A fork
 * does not inherit the alarm, so servers a test starts are not touched. */
#ifndef TESTS_UNIT_WATCHDOG_H
#define TESTS_UNIT_WATCHDOG_H

#include <signal.h>
#include <unistd.h>

static void unit_watchdog_fire(int sig)
{
    static const char msg[] = "watchdog: the test ran past its time bound (UNIT_WATCHDOG)\n";
    (void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
    signal(sig, SIG_DFL);
    raise(sig);
}

static inline void unit_watchdog(unsigned seconds)
{
    signal(SIGALRM, unit_watchdog_fire);
    alarm(seconds);
}

#define UNIT_WATCHDOG(seconds) unit_watchdog(seconds)

#endif
