package cache

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gptbatch/gptbatch/internal/redistest"
)

// benchBody is a chat answer of a typical size (about 700 bytes).
var benchBody = []byte(`{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741570283,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"` +
	strings.Repeat("The answer, in a sentence or two. ", 10) + `","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":1117,"completion_tokens":46,"total_tokens":1163,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_06737a9306"}`)

func benchEntry(i int) Entry {
	e := testEntry(i, time.Now())
	e.Body = benchBody
	return e
}

type benchStore struct {
	name string
	open func(b *testing.B) Store
}

func benchStores() []benchStore {
	return []benchStore{
		{"file", func(b *testing.B) Store { return openFile(b, filepath.Join(b.TempDir(), "cache.db"), Options{}) }},
		{"redis", func(b *testing.B) Store {
			c := redis.NewClient(&redis.Options{Addr: redistest.Start(b).Addr})
			b.Cleanup(func() { c.Close() })
			r, err := OpenRedis(context.Background(), c, "bench", Options{})
			if err != nil {
				b.Fatal(err)
			}
			return r
		}},
	}
}

// BenchmarkGetMany: a block of 1,000 keys, all stored, as a fully cached
// re-run asks for them; the figure that matters is ns/key.
func BenchmarkGetMany(b *testing.B) {
	const block = 1000
	ctx := context.Background()
	for _, bs := range benchStores() {
		b.Run(bs.name, func(b *testing.B) {
			s := bs.open(b)
			var keys []Key
			var es []Entry
			for i := range block {
				keys = append(keys, testKey(i))
				es = append(es, benchEntry(i))
			}
			if err := s.Put(ctx, es...); err != nil {
				b.Fatal(err)
			}
			cpu := cpuTime()
			for b.Loop() {
				got, err := s.GetMany(ctx, keys)
				if err != nil {
					b.Fatal(err)
				}
				if got[block-1] == nil {
					b.Fatal("a miss")
				}
			}
			perKey := float64(b.Elapsed().Nanoseconds()) / float64(b.N*block)
			b.ReportMetric(perKey, "ns/key")
			b.ReportMetric(1e9/perKey, "keys/s")
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N*block), "cpu-ns/key")
		})
	}
}

// BenchmarkPut: one answer a Put, as a sync run stores them, and a block
// of 100 a Put, as a collected batch can.
func BenchmarkPut(b *testing.B) {
	ctx := context.Background()
	for _, bs := range benchStores() {
		for _, n := range []int{1, 100} {
			b.Run(fmt.Sprintf("%s/%d", bs.name, n), func(b *testing.B) {
				s := bs.open(b)
				i := 0
				es := make([]Entry, n)
				cpu := cpuTime()
				for b.Loop() {
					for j := range es {
						es[j] = benchEntry(i)
						i++
					}
					if err := s.Put(ctx, es...); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(i), "ns/entry")
				b.ReportMetric(float64(cpuTime()-cpu)/float64(i), "cpu-ns/entry")
			})
		}
	}
}

// cpuTime is the CPU time the process has used, in nanoseconds: on a
// machine shared with other work, the wall time a benchmark takes says
// more about the load than about the code.
func cpuTime() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkKey: a chat request of about 1 KB, keyed by a reused Keyer.
func BenchmarkKey(b *testing.B) {
	body := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You label reviews."},{"role":"user","content":"` +
		strings.Repeat("A review of a product, written by someone who bought it. ", 16) + `"}],"temperature":0,"max_tokens":256,"response_format":{"type":"json_object"}}`)
	var kr Keyer
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := kr.Key(chat, openai, body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetManyFew: blocks of 16 keys, as a run's lookup often gets
// when the lines come no faster than it reads them.
func BenchmarkGetManyFew(b *testing.B) {
	const block, stored = 16, 1024
	ctx := context.Background()
	s := benchStores()[0].open(b)
	var keys []Key
	var es []Entry
	for i := range stored {
		keys = append(keys, testKey(i))
		es = append(es, benchEntry(i))
	}
	if err := s.Put(ctx, es...); err != nil {
		b.Fatal(err)
	}
	cpu := cpuTime()
	i := 0
	for b.Loop() {
		part := keys[i : i+block]
		i = (i + block) % stored
		got, err := s.GetMany(ctx, part)
		if err != nil {
			b.Fatal(err)
		}
		if got[block-1] == nil {
			b.Fatal("a miss")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*block), "ns/key")
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N*block), "cpu-ns/key")
}
