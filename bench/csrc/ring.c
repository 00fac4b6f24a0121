/* DPDK's side of `cargo xtask bench ring`: DPDK's own rte_ring (inline functions from
 * libdpdk-dev's headers) called inline from the same loop shapes as ring_perf_autotest, with no
 * EAL: rings are placed with rte_ring_init() in aligned_alloc memory, or in a MAP_SHARED mapping
 * for the cross-process rows (the parent enqueues on CPU 0, a forked child dequeues on CPU 1).
 * Also the raw cache-line ping-pong floor between two processes.
 * Every symbol is prefixed ring_. Our own code; no DPDK source is copied. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <rte_cycles.h>
#include <rte_pause.h>
#include <rte_ring.h>

static struct rte_ring *ring_r;
static volatile unsigned ring_bulk_n; /* run-time sizes, as ring_perf_autotest has */

static int ring_pin(int cpu)
{
	cpu_set_t s;
	CPU_ZERO(&s);
	CPU_SET(cpu, &s);
	return sched_setaffinity(0, sizeof(s), &s);
}

static struct rte_ring *ring_make(void *mem, unsigned count)
{
	if (rte_ring_init((struct rte_ring *)mem, "RING_PERF", count, 0) != 0)
		return NULL;
	return (struct rte_ring *)mem;
}

int ring_dpdk_init(void)
{
	if (ring_r)
		return 0;
	ssize_t sz = rte_ring_get_memsize(4096);
	void *m = aligned_alloc(128, (sz + 127) & ~127);
	if (!m)
		return -1;
	ring_r = ring_make(m, 4096);
	return ring_r ? 0 : -1;
}

static void **ring_burst(void)
{
	void **p = aligned_alloc(64, 32 * sizeof(void *));
	memset(p, 0, 32 * sizeof(void *));
	return p;
}

double ring_dpdk_single(int mp, unsigned iters)
{
	struct rte_ring *r = ring_r;
	void **burst = ring_burst();
	uint64_t t0 = rte_rdtsc();
	if (!mp)
		for (unsigned i = 0; i < iters; i++) {
			rte_ring_sp_enqueue(r, *burst);
			rte_ring_sc_dequeue(r, burst);
		}
	else
		for (unsigned i = 0; i < iters; i++) {
			rte_ring_mp_enqueue(r, *burst);
			rte_ring_mc_dequeue(r, burst);
		}
	uint64_t t1 = rte_rdtsc();
	free(burst);
	return (double)(t1 - t0) / iters;
}

/* kind: 0 bulk, 1 burst */
double ring_dpdk_bulk(int mp, int kind, unsigned n, unsigned iters)
{
	struct rte_ring *r = ring_r;
	void **burst = ring_burst();
	ring_bulk_n = n;
	unsigned sz = ring_bulk_n;
	uint64_t t0 = rte_rdtsc();
	if (!mp && !kind)
		for (unsigned i = 0; i < iters; i++) {
			rte_ring_sp_enqueue_bulk(r, burst, sz, NULL);
			rte_ring_sc_dequeue_bulk(r, burst, sz, NULL);
		}
	else if (!mp)
		for (unsigned i = 0; i < iters; i++) {
			rte_ring_sp_enqueue_burst(r, burst, sz, NULL);
			rte_ring_sc_dequeue_burst(r, burst, sz, NULL);
		}
	else if (!kind)
		for (unsigned i = 0; i < iters; i++) {
			rte_ring_mp_enqueue_bulk(r, burst, sz, NULL);
			rte_ring_mc_dequeue_bulk(r, burst, sz, NULL);
		}
	else
		for (unsigned i = 0; i < iters; i++) {
			rte_ring_mp_enqueue_burst(r, burst, sz, NULL);
			rte_ring_mc_dequeue_burst(r, burst, sz, NULL);
		}
	uint64_t t1 = rte_rdtsc();
	free(burst);
	return (double)(t1 - t0) / iters;
}

/* mode: 1 RTS, 2 HTS; n == 1: single element calls. The rings are made on first use. */
static struct rte_ring *ring_sync_r[3];
double ring_dpdk_sync(int mode, unsigned n, unsigned iters)
{
	if (mode < 1 || mode > 2)
		return -1;
	if (!ring_sync_r[mode]) {
		unsigned flags = mode == 1 ? RING_F_MP_RTS_ENQ | RING_F_MC_RTS_DEQ
					   : RING_F_MP_HTS_ENQ | RING_F_MC_HTS_DEQ;
		ssize_t sz = rte_ring_get_memsize(4096);
		void *m = aligned_alloc(128, (sz + 127) & ~127);
		if (!m || rte_ring_init((struct rte_ring *)m, mode == 1 ? "RING_RTS" : "RING_HTS",
					4096, flags) != 0)
			return -1;
		ring_sync_r[mode] = (struct rte_ring *)m;
	}
	struct rte_ring *r = ring_sync_r[mode];
	void **burst = ring_burst();
	ring_bulk_n = n;
	unsigned sz = ring_bulk_n;
	uint64_t t0 = rte_rdtsc();
	if (mode == 1 && n == 1)
		for (unsigned i = 0; i < iters; i++) {
			rte_ring_mp_rts_enqueue_bulk(r, burst, 1, NULL);
			rte_ring_mc_rts_dequeue_bulk(r, burst, 1, NULL);
		}
	else if (mode == 1)
		for (unsigned i = 0; i < iters; i++) {
			rte_ring_mp_rts_enqueue_bulk(r, burst, sz, NULL);
			rte_ring_mc_rts_dequeue_bulk(r, burst, sz, NULL);
		}
	else if (n == 1)
		for (unsigned i = 0; i < iters; i++) {
			rte_ring_mp_hts_enqueue_bulk(r, burst, 1, NULL);
			rte_ring_mc_hts_dequeue_bulk(r, burst, 1, NULL);
		}
	else
		for (unsigned i = 0; i < iters; i++) {
			rte_ring_mp_hts_enqueue_bulk(r, burst, sz, NULL);
			rte_ring_mc_hts_dequeue_bulk(r, burst, sz, NULL);
		}
	uint64_t t1 = rte_rdtsc();
	free(burst);
	return (double)(t1 - t0) / iters;
}

double ring_dpdk_empty(int mp, unsigned iters)
{
	struct rte_ring *r = ring_r;
	void **burst = ring_burst();
	ring_bulk_n = 8;
	unsigned sz = ring_bulk_n;
	uint64_t t0 = rte_rdtsc();
	if (!mp)
		for (unsigned i = 0; i < iters; i++)
			rte_ring_sc_dequeue_bulk(r, burst, sz, NULL);
	else
		for (unsigned i = 0; i < iters; i++)
			rte_ring_mc_dequeue_bulk(r, burst, sz, NULL);
	uint64_t t1 = rte_rdtsc();
	free(burst);
	return (double)(t1 - t0) / iters;
}

struct ring_side {
	unsigned n, iters;
	int enq, mp;
	atomic_uint *ready;
	double per_elem;
};

static void *ring_side_run(void *arg)
{
	struct ring_side *p = arg;
	struct rte_ring *r = ring_r;
	if (!p->enq)
		ring_pin(1);
	atomic_fetch_add(p->ready, 1);
	while (atomic_load(p->ready) != 2)
		rte_pause();
	void **burst = ring_burst();
	unsigned n = p->n;
	uint64_t t0 = rte_rdtsc();
	for (unsigned i = 0; i < p->iters; i++) {
		if (p->enq) {
			if (p->mp)
				while (rte_ring_mp_enqueue_bulk(r, burst, n, NULL) == 0)
					rte_pause();
			else
				while (rte_ring_sp_enqueue_bulk(r, burst, n, NULL) == 0)
					rte_pause();
		} else {
			if (p->mp)
				while (rte_ring_mc_dequeue_bulk(r, burst, n, NULL) == 0)
					rte_pause();
			else
				while (rte_ring_sc_dequeue_bulk(r, burst, n, NULL) == 0)
					rte_pause();
		}
	}
	uint64_t t1 = rte_rdtsc();
	free(burst);
	p->per_elem = (double)(t1 - t0) / ((double)p->iters * n);
	return NULL;
}

/* Enqueue side on the calling thread (pinned to CPU 0), dequeue side on a thread pinned to
 * CPU 1; returns the enqueue-side plus dequeue-side cycles per element. */
double ring_dpdk_two_cores(int mp, unsigned n, unsigned iters)
{
	atomic_uint ready = 0;
	struct ring_side e = {.n = n, .iters = iters, .enq = 1, .mp = mp, .ready = &ready};
	struct ring_side d = {.n = n, .iters = iters, .enq = 0, .mp = mp, .ready = &ready};
	pthread_t t;
	ring_pin(0);
	pthread_create(&t, NULL, ring_side_run, &d);
	ring_side_run(&e);
	pthread_join(t, NULL);
	return e.per_elem + d.per_elem;
}

/* Cross-process: a ring in a MAP_SHARED mapping; the parent (CPU 0) enqueues `count` sequence
 * numbers in bursts of `burst`, a forked child (CPU 1) dequeues and checks them. Returns cycles
 * per object measured by the parent from the start signal to the child's last dequeue, or a
 * negative value if the child saw the wrong order. */
double ring_dpdk_xproc(int mp, unsigned burst, unsigned long count)
{
	ssize_t sz = rte_ring_get_memsize(4096);
	size_t len = 4096 + ((sz + 4095) & ~4095);
	char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return -1;
	atomic_ulong *ctl = (atomic_ulong *)m; /* [0] go, [1] done, [2] errors, [3] child end tsc */
	struct rte_ring *r = ring_make(m + 4096, 4096);
	if (!r)
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		ring_pin(1);
		void *objs[64];
		unsigned long next = 0, errs = 0;
		atomic_fetch_add(&ctl[0], 1);
		while (next < count) {
			unsigned k = mp ? rte_ring_mc_dequeue_burst(r, objs, burst, NULL)
					: rte_ring_sc_dequeue_burst(r, objs, burst, NULL);
			for (unsigned i = 0; i < k; i++)
				errs += (uintptr_t)objs[i] != next++;
			if (!k)
				rte_pause();
		}
		atomic_store(&ctl[2], errs);
		atomic_store(&ctl[3], rte_rdtsc());
		atomic_store(&ctl[1], 1);
		_exit(0);
	}
	ring_pin(0);
	while (atomic_load(&ctl[0]) == 0)
		rte_pause();
	void *objs[64];
	unsigned long seq = 0;
	uint64_t t0 = rte_rdtsc();
	while (seq < count) {
		unsigned b = burst;
		if (count - seq < b)
			b = count - seq;
		for (unsigned i = 0; i < b; i++)
			objs[i] = (void *)(uintptr_t)(seq + i);
		unsigned k = mp ? rte_ring_mp_enqueue_burst(r, objs, b, NULL)
				: rte_ring_sp_enqueue_burst(r, objs, b, NULL);
		seq += k;
		if (!k)
			rte_pause();
	}
	while (atomic_load(&ctl[1]) == 0)
		rte_pause();
	uint64_t t1 = atomic_load(&ctl[3]);
	int st;
	waitpid(pid, &st, 0);
	unsigned long errs = atomic_load(&ctl[2]);
	munmap(m, len);
	if (errs)
		return -2;
	return (double)(t1 - t0) / count;
}

/* One-element ping-pong between two processes through two DPDK SP/SC rings; returns cycles per
 * round trip. */
double ring_dpdk_pingpong(unsigned long iters)
{
	ssize_t sz = rte_ring_get_memsize(64);
	size_t one = (sz + 4095) & ~4095;
	size_t len = 4096 + 2 * one;
	char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return -1;
	atomic_ulong *ctl = (atomic_ulong *)m;
	struct rte_ring *ping = ring_make(m + 4096, 64);
	struct rte_ring *pong = ring_make(m + 4096 + one, 64);
	pid_t pid = fork();
	if (pid == 0) {
		ring_pin(1);
		atomic_fetch_add(&ctl[0], 1);
		void *o;
		for (unsigned long i = 0; i < iters; i++) {
			while (rte_ring_sc_dequeue(ping, &o) != 0)
				;
			while (rte_ring_sp_enqueue(pong, o) != 0)
				;
		}
		_exit(0);
	}
	ring_pin(0);
	while (atomic_load(&ctl[0]) == 0)
		rte_pause();
	void *o = (void *)1;
	uint64_t t0 = rte_rdtsc();
	for (unsigned long i = 0; i < iters; i++) {
		while (rte_ring_sp_enqueue(ping, o) != 0)
			;
		while (rte_ring_sc_dequeue(pong, &o) != 0)
			;
	}
	uint64_t t1 = rte_rdtsc();
	int st;
	waitpid(pid, &st, 0);
	munmap(m, len);
	return (double)(t1 - t0) / iters;
}

/* The hardware floor: a raw ping-pong between two processes on one shared cache line
 * (`lines` = 1) or on two lines, ping and pong apart (`lines` = 2); cycles per round trip. */
double ring_raw_pingpong(int lines, unsigned long iters)
{
	char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return -1;
	atomic_ulong *ready = (atomic_ulong *)(m + 1024);
	atomic_ulong *ping = (atomic_ulong *)m;
	atomic_ulong *pong = lines == 1 ? ping : (atomic_ulong *)(m + 256);
	pid_t pid = fork();
	if (pid == 0) {
		ring_pin(1);
		atomic_fetch_add(ready, 1);
		for (unsigned long i = 1; i <= iters; i++) {
			unsigned long want = lines == 1 ? 2 * i - 1 : i;
			while (atomic_load_explicit(ping, memory_order_acquire) != want)
				;
			atomic_store_explicit(pong, lines == 1 ? 2 * i : i, memory_order_release);
		}
		_exit(0);
	}
	ring_pin(0);
	while (atomic_load(ready) == 0)
		;
	uint64_t t0 = rte_rdtsc();
	for (unsigned long i = 1; i <= iters; i++) {
		atomic_store_explicit(ping, lines == 1 ? 2 * i - 1 : i, memory_order_release);
		unsigned long want = lines == 1 ? 2 * i : i;
		while (atomic_load_explicit(pong, memory_order_acquire) != want)
			;
	}
	uint64_t t1 = rte_rdtsc();
	int st;
	waitpid(pid, &st, 0);
	munmap(m, 4096);
	return (double)(t1 - t0) / iters;
}
