package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/gptbatch/gptbatch/internal/redistest"
)

// clock is a settable clock for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// kind is a Store implementation under test: how to open one, and how to
// edit one of its entries by hand.
type kind struct {
	name string
	// open returns a new empty store and a second handle on the same
	// store, as another process would have.
	open func(t *testing.T, o Options) (Store, Store)
	// forge edits the body of k's entry behind the store's back, keeping
	// its stored checksum.
	forge func(t *testing.T, s Store, k Key)
	// move copies k's entry to the key to, behind the store's back.
	move func(t *testing.T, s Store, k, to Key)
}

func fileKind() kind {
	return kind{
		name: "file",
		open: func(t *testing.T, o Options) (Store, Store) {
			path := filepath.Join(t.TempDir(), "cache.db")
			return openFile(t, path, o), openFile(t, path, o)
		},
		forge: func(t *testing.T, s Store, k Key) {
			execSQL(t, s.String(), "UPDATE entries SET body = CAST(replace(CAST(body AS TEXT), 'answer', 'forged') AS BLOB) WHERE id = ?", rowOf(k))
		},
		move: func(t *testing.T, s Store, k, to Key) {
			execSQL(t, s.String(), "INSERT INTO entries SELECT ?, created, size, head, body FROM entries WHERE id = ?", rowOf(to), rowOf(k))
		},
	}
}

func openFile(t testing.TB, path string, o Options) *File {
	t.Helper()
	f, err := OpenFile(context.Background(), path, o)
	if err != nil {
		t.Fatalf("OpenFile(%s): %v", path, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// execSQL edits the database at path by hand, as a user with sqlite3
// would.
func execSQL(t *testing.T, path, query string, args ...any) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("PRAGMA busy_timeout = 10000"); err != nil {
		t.Fatal(err)
	}
	res, err := db.Exec(query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("%s: %d rows, want 1", query, n)
	}
}

func redisKind(name string, addr func(t *testing.T) string) kind {
	client := func(s Store) redis.UniversalClient { return s.(*Redis).c }
	return kind{
		name: name,
		open: func(t *testing.T, o Options) (Store, Store) {
			a := addr(t)
			// A budget of its own: the server may be shared.
			budget := fmt.Sprint("test-", budgets.Add(1))
			open := func() Store {
				c := redis.NewClient(&redis.Options{Addr: a})
				t.Cleanup(func() { c.Close() })
				r, err := OpenRedis(context.Background(), c, budget, o)
				if err != nil {
					t.Fatalf("OpenRedis: %v", err)
				}
				return r
			}
			return open(), open()
		},
		forge: func(t *testing.T, s Store, k Key) {
			r := s.(*Redis)
			n, err := client(s).StrLen(context.Background(), r.key(k)).Result()
			if err != nil || n == 0 {
				t.Fatalf("STRLEN %s = %d, %v", r.key(k), n, err)
			}
			if err := client(s).SetRange(context.Background(), r.key(k), n-1, "X").Err(); err != nil {
				t.Fatal(err)
			}
		},
		move: func(t *testing.T, s Store, k, to Key) {
			r := s.(*Redis)
			if err := client(s).Copy(context.Background(), r.key(k), r.key(to), 0, false).Err(); err != nil {
				t.Fatal(err)
			}
		},
	}
}

func miniredisKind() kind {
	return redisKind("redis (miniredis)", func(t *testing.T) string { return miniredis.RunT(t).Addr() })
}

func redisServerKind() kind {
	return redisKind("redis (redis-server)", func(t *testing.T) string { return redistest.Shared(t).Addr })
}

// budgets numbers the budgets the tests make on the shared redis-server.
var budgets atomic.Int64

func kinds() []kind { return []kind{fileKind(), miniredisKind(), redisServerKind()} }

// testKey is a key made from a number, as if a request's.
func testKey(i int) Key { return sha256.Sum256(fmt.Appendf(nil, "request %d", i)) }

// testEntry is the answer to testKey(i).
func testEntry(i int, created time.Time) Entry {
	return Entry{
		Key:      testKey(i),
		Endpoint: "/v1/chat/completions",
		Model:    "gpt-4o-mini-2024-07-18",
		Created:  created,
		Cost:     int64(7500000 + i),
		Body:     fmt.Appendf(nil, `{"id":"chatcmpl-%d","choices":[{"message":{"role":"assistant","content":"answer %d"},"finish_reason":"stop"}]}`, i, i),
	}
}

func sameEntry(t *testing.T, got *Entry, want Entry) {
	t.Helper()
	if got == nil {
		t.Fatalf("entry %v missing, want %s", want.Key, want.Body)
	}
	want.Created = time.UnixMilli(want.Created.UnixMilli())
	if got.Key != want.Key || got.Endpoint != want.Endpoint || got.Model != want.Model ||
		!got.Created.Equal(want.Created) || got.Cost != want.Cost || !bytes.Equal(got.Body, want.Body) {
		t.Fatalf("entry = %+v (body %s), want %+v (body %s)", *got, got.Body, want, want.Body)
	}
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)

func TestStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, kd := range kinds() {
		t.Run(kd.name, func(t *testing.T) {
			t.Run("an answer put is got back as it was, by another handle too", func(t *testing.T) {
				clk := &clock{t: t0}
				s, other := kd.open(t, Options{Now: clk.Now})
				e := testEntry(1, t0)
				if err := s.Put(ctx, e); err != nil {
					t.Fatal(err)
				}
				for _, h := range []Store{s, other} {
					got, err := h.Get(ctx, e.Key)
					if err != nil {
						t.Fatal(err)
					}
					sameEntry(t, got, e)
				}
				if got, err := s.Get(ctx, testKey(2)); got != nil || err != nil {
					t.Errorf("Get(a key never put) = %v, %v, want nil, nil", got, err)
				}
			})
			t.Run("GetMany answers each key in its place", func(t *testing.T) {
				clk := &clock{t: t0}
				s, _ := kd.open(t, Options{Now: clk.Now})
				// More keys than one SELECT asks for; the even ones stored.
				var put []Entry
				for i := 0; i < 2*getChunk+30; i += 2 {
					put = append(put, testEntry(i, t0))
				}
				if err := s.Put(ctx, put...); err != nil {
					t.Fatal(err)
				}
				var keys []Key
				for i := range 2*getChunk + 30 {
					keys = append(keys, testKey(i))
				}
				keys = append(keys, testKey(4), testKey(5)) // asked twice
				got, err := s.GetMany(ctx, keys)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(keys) {
					t.Fatalf("GetMany(%d keys) = %d entries", len(keys), len(got))
				}
				for i := range 2*getChunk + 30 {
					if i%2 == 1 {
						if got[i] != nil {
							t.Errorf("GetMany: key %d never put = %s, want a miss", i, got[i].Body)
						}
						continue
					}
					sameEntry(t, got[i], testEntry(i, t0))
				}
				sameEntry(t, got[len(keys)-2], testEntry(4, t0))
				if got[len(keys)-1] != nil {
					t.Errorf("GetMany: key 5 asked again = %s, want a miss", got[len(keys)-1].Body)
				}
				if got, err := s.GetMany(ctx, nil); len(got) != 0 || err != nil {
					t.Errorf("GetMany(no keys) = %v, %v", got, err)
				}
			})
			t.Run("a put replaces, from any handle", func(t *testing.T) {
				clk := &clock{t: t0}
				s, other := kd.open(t, Options{Now: clk.Now})
				first, second := testEntry(1, t0), testEntry(1, t0.Add(time.Minute))
				second.Body = []byte(`{"second":true}`)
				for _, p := range []struct {
					s Store
					e Entry
				}{{s, first}, {other, first}, {other, second}} {
					if err := p.s.Put(ctx, p.e); err != nil {
						t.Fatal(err)
					}
				}
				got, err := s.Get(ctx, first.Key)
				if err != nil {
					t.Fatal(err)
				}
				sameEntry(t, got, second)
			})
			t.Run("an answer older than the TTL is not served", func(t *testing.T) {
				clk := &clock{t: t0}
				s, _ := kd.open(t, Options{Now: clk.Now, TTL: time.Hour})
				if err := s.Put(ctx, testEntry(1, t0), testEntry(2, t0.Add(-2*time.Hour))); err != nil {
					t.Fatal(err)
				}
				got, err := s.GetMany(ctx, []Key{testKey(1), testKey(2)})
				if err != nil {
					t.Fatal(err)
				}
				sameEntry(t, got[0], testEntry(1, t0))
				if got[1] != nil {
					t.Errorf("an answer created 2h ago, TTL 1h: got %s, want a miss", got[1].Body)
				}
				clk.Add(time.Hour + time.Millisecond)
				if got, err := s.Get(ctx, testKey(1)); got != nil || err != nil {
					t.Errorf("an answer 1h and 1ms old, TTL 1h: Get = %v, %v, want a miss", got, err)
				}
			})
			t.Run("an entry that does not match its key is a miss, and is reported", func(t *testing.T) {
				clk := &clock{t: t0}
				var mu sync.Mutex
				var told []Key
				s, _ := kd.open(t, Options{Now: clk.Now, OnMismatch: func(k Key) {
					mu.Lock()
					defer mu.Unlock()
					told = append(told, k)
				}})
				if err := s.Put(ctx, testEntry(1, t0), testEntry(2, t0)); err != nil {
					t.Fatal(err)
				}
				kd.forge(t, s, testKey(1))
				kd.move(t, s, testKey(2), testKey(3))
				got, err := s.GetMany(ctx, []Key{testKey(1), testKey(2), testKey(3)})
				if err != nil {
					t.Fatal(err)
				}
				if got[0] != nil {
					t.Errorf("an entry edited by hand = %s, want a miss", got[0].Body)
				}
				sameEntry(t, got[1], testEntry(2, t0))
				if got[2] != nil {
					t.Errorf("an entry copied under another key = %s, want a miss", got[2].Body)
				}
				mu.Lock()
				defer mu.Unlock()
				if len(told) != 2 || told[0] != testKey(1) && told[1] != testKey(1) || told[0] != testKey(3) && told[1] != testKey(3) {
					t.Errorf("OnMismatch heard of %v, want keys 1 and 3: %v, %v", told, testKey(1), testKey(3))
				}
				// A fresh answer puts it right.
				if err := s.Put(ctx, testEntry(1, t0)); err != nil {
					t.Fatal(err)
				}
				if got, err := s.Get(ctx, testKey(1)); err != nil || got == nil {
					t.Errorf("Get after the answer was put again = %v, %v", got, err)
				}
			})
			t.Run("stats count the entries, their bytes and the hits, and prune and clear remove them", func(t *testing.T) {
				clk := &clock{t: t0}
				s, other := kd.open(t, Options{Now: clk.Now})
				es := []Entry{testEntry(1, t0.Add(-3*time.Hour)), testEntry(2, t0.Add(-2*time.Hour)), testEntry(3, t0)}
				if err := s.Put(ctx, es...); err != nil {
					t.Fatal(err)
				}
				if err := s.RecordHits(ctx, 3, 22500000); err != nil {
					t.Fatal(err)
				}
				if err := other.RecordHits(ctx, 1, 7500000); err != nil {
					t.Fatal(err)
				}
				st, err := other.Stats(ctx)
				if err != nil {
					t.Fatal(err)
				}
				var bytes int64
				for _, e := range es {
					bytes += int64(e.Size())
				}
				if st.Entries != 3 || st.Bytes != bytes || st.Hits != 4 || st.Saved != 30000000 ||
					!st.Oldest.Equal(time.UnixMilli(es[0].Created.UnixMilli())) || !st.Newest.Equal(time.UnixMilli(t0.UnixMilli())) {
					t.Errorf("Stats = %+v, want 3 entries, %d bytes, 4 hits, 30000000 saved, oldest %v, newest %v", st, bytes, es[0].Created, t0)
				}
				if n, err := s.Prune(ctx, t0.Add(-90*time.Minute)); n != 2 || err != nil {
					t.Errorf("Prune(90 minutes ago) = %d, %v, want 2", n, err)
				}
				got, err := s.GetMany(ctx, []Key{testKey(1), testKey(2), testKey(3)})
				if err != nil {
					t.Fatal(err)
				}
				if got[0] != nil || got[1] != nil {
					t.Errorf("after Prune, the older entries are still served")
				}
				sameEntry(t, got[2], es[2])
				if n, err := other.Clear(ctx); n != 1 || err != nil {
					t.Errorf("Clear = %d, %v, want 1", n, err)
				}
				if got, err := s.Get(ctx, testKey(3)); got != nil || err != nil {
					t.Errorf("after Clear, Get = %v, %v, want a miss", got, err)
				}
				st, err = s.Stats(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if st.Entries != 0 || st.Bytes != 0 || st.Hits != 0 || st.Saved != 0 || !st.Oldest.IsZero() {
					t.Errorf("Stats after Clear = %+v, want nothing", st)
				}
				// Still usable.
				if err := s.Put(ctx, es[0]); err != nil {
					t.Fatal(err)
				}
			})
			t.Run("goroutines reading and writing the same keys at once", func(t *testing.T) {
				s, other := kd.open(t, Options{})
				now := time.Now()
				var wg sync.WaitGroup
				var wrong atomic.Int64
				errs := make(chan error, 8)
				for g := range 8 {
					h := []Store{s, other}[g%2]
					wg.Go(func() {
						for i := range 40 {
							n := (g*7 + i) % 50
							got, err := h.GetMany(ctx, []Key{testKey(n), testKey(n + 1)})
							if err != nil {
								errs <- fmt.Errorf("get: %w", err)
								return
							}
							for j, e := range got {
								if e != nil && !bytes.Equal(e.Body, testEntry(n+j, now).Body) {
									wrong.Add(1)
								}
							}
							if err := h.Put(ctx, testEntry(n, now), testEntry(n+1, now)); err != nil {
								errs <- fmt.Errorf("put: %w", err)
								return
							}
						}
					})
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Error(err)
				}
				if n := wrong.Load(); n > 0 {
					t.Errorf("%d wrong answers", n)
				}
			})
		})
	}
}
