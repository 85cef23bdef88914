/*
 * A write-protect fault storm on DAX files.
 *
 *   storm [-t THREADS] [-f] FILE PAGES ROUNDS
 *
 * Maps FILE (created/extended to PAGES pages) MAP_SHARED, writes every page
 * once (first-touch faults, not counted), then ROUNDS times:
 *   msync(MS_SYNC)     - writes back and re-write-protects every page
 *   write every page   - PAGES write-protect faults (->pfn_mkwrite on DAX)
 * so ROUNDS * PAGES write-protect faults, as fast as the kernel allows.
 *
 * -t THREADS: that many threads at once.  Without -f they share the one
 * mapping of FILE, each with its own slice of PAGES / THREADS pages that it
 * alone msyncs and writes (one file, one page table, one inode's timestamps
 * for all of them); still ROUNDS * PAGES faults in all.  With -f each thread
 * has a file of its own, FILE.0 ... FILE.<THREADS-1>, of PAGES pages:
 * THREADS * ROUNDS * PAGES faults.
 *
 * Prints one line of key=value: the whole loop's rate (msync included) and
 * the write passes' rate alone (the faults without the writeback cost; with
 * threads, their write time averaged over the threads).
 * Keep PAGES * 4 KiB under 2 MiB so the file is mapped with PTEs, not PMDs.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

struct slice {
	volatile char *m;	/* first page of this thread's pages */
	long pages, rounds, page;
	double write_s, sync_s;
	int failed;
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A mapping of PATH, PAGES allocated pages, every page written once. */
static volatile char *map_file(const char *path, long pages, long page)
{
	size_t len = (size_t)pages * page;
	int fd = open(path, O_RDWR | O_CREAT, 0644);
	if (fd < 0 || ftruncate(fd, len) != 0) {
		perror(path);
		return NULL;
	}
	/* Allocate blocks up front: no holes, so faults are not allocations. */
	if (fallocate(fd, 0, 0, len) != 0) {
		perror("fallocate");
		return NULL;
	}
	volatile char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED) {
		perror("mmap");
		return NULL;
	}
	for (long i = 0; i < pages; i++)
		m[i * page] = 1;
	return m;
}

static void *storm(void *arg)
{
	struct slice *s = arg;
	size_t len = (size_t)s->pages * s->page;
	for (long r = 0; r < s->rounds; r++) {
		double a = now();
		if (msync((void *)s->m, len, MS_SYNC) != 0) {
			perror("msync");
			s->failed = 1;
			return NULL;
		}
		double b = now();
		for (long i = 0; i < s->pages; i++)
			s->m[i * s->page] = (char)r;
		double c = now();
		s->sync_s += b - a;
		s->write_s += c - b;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	long threads = 1;
	int own_files = 0, opt;
	while ((opt = getopt(argc, argv, "t:f")) != -1) {
		if (opt == 't')
			threads = atol(optarg);
		else if (opt == 'f')
			own_files = 1;
		else
			threads = 0;
	}
	if (argc - optind != 3 || threads < 1) {
		fprintf(stderr, "usage: %s [-t THREADS] [-f] FILE PAGES ROUNDS\n", argv[0]);
		return 2;
	}
	const char *path = argv[optind];
	long pages = atol(argv[optind + 1]), rounds = atol(argv[optind + 2]);
	long page = sysconf(_SC_PAGESIZE);
	if (pages < 1 || rounds < 0 || (!own_files && pages % threads)) {
		fprintf(stderr, "storm: PAGES must be a positive multiple of THREADS "
			"(or give -f)\n");
		return 2;
	}
	struct slice *s = calloc(threads, sizeof(*s));
	pthread_t *tids = calloc(threads, sizeof(*tids));
	volatile char *shared = own_files ? NULL : map_file(path, pages, page);
	if (!s || !tids || (!own_files && !shared))
		return 1;
	for (long t = 0; t < threads; t++) {
		s[t].page = page;
		s[t].rounds = rounds;
		if (own_files) {
			char name[4096];
			snprintf(name, sizeof(name), "%s.%ld", path, t);
			s[t].pages = pages;
			s[t].m = map_file(name, pages, page);
			if (!s[t].m)
				return 1;
		} else {
			s[t].pages = pages / threads;
			s[t].m = shared + t * s[t].pages * page;
		}
	}

	double write_s = 0, sync_s = 0, t0 = now();
	long faults = 0;
	if (threads == 1) {
		storm(&s[0]);
	} else {
		for (long t = 0; t < threads; t++)
			if (pthread_create(&tids[t], NULL, storm, &s[t]) != 0) {
				perror("pthread_create");
				return 1;
			}
		for (long t = 0; t < threads; t++)
			pthread_join(tids[t], NULL);
	}
	double total = now() - t0;
	for (long t = 0; t < threads; t++) {
		if (s[t].failed)
			return 1;
		write_s += s[t].write_s / threads;
		sync_s += s[t].sync_s / threads;
		faults += s[t].pages * rounds;
	}
	printf("faults=%ld seconds=%.6f faults_per_s=%.0f write_seconds=%.6f "
	       "write_faults_per_s=%.0f msync_seconds=%.6f threads=%ld\n",
	       faults, total, faults / total, write_s, faults / write_s, sync_s, threads);
	return 0;
}
