package cache

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/gptbatch/gptbatch/internal/redistest"
)

func openRedis(t *testing.T, c redis.UniversalClient, name string, o Options) *Redis {
	t.Helper()
	r, err := OpenRedis(context.Background(), c, name, o)
	if err != nil {
		t.Fatalf("OpenRedis(%s): %v", name, err)
	}
	return r
}

func newClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	return c
}

// Entries live beside the budget of their name, each its own key with
// no hash tag (on a Cluster, a slot each); a cache of one budget is not
// another's, and clearing it leaves the budget alone.
func TestRedisKeysBesideTheBudget(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m := miniredis.RunT(t)
	c := newClient(t, m.Addr())
	m.HSet("{gptbatch:team}:state", "tday", "5") // the budget's
	team, other := openRedis(t, c, "team", Options{}), openRedis(t, c, "other", Options{})
	if err := team.Put(ctx, testEntry(1, time.Now())); err != nil {
		t.Fatal(err)
	}
	if err := other.Put(ctx, testEntry(2, time.Now())); err != nil {
		t.Fatal(err)
	}
	want := "gptbatch:team:cache:" + testKey(1).String()
	if !m.Exists(want) {
		t.Errorf("keys %v, want %s", m.Keys(), want)
	}
	for _, k := range m.Keys() {
		if strings.HasPrefix(k, "gptbatch:") && strings.ContainsAny(k, "{}") {
			t.Errorf("key %s has a hash tag", k)
		}
	}
	if got, err := team.Get(ctx, testKey(2)); got != nil || err != nil {
		t.Errorf("budget team's cache answers budget other's key: %v, %v", got, err)
	}
	if n, err := team.Clear(ctx); n != 1 || err != nil {
		t.Errorf("Clear = %d, %v, want 1", n, err)
	}
	if !m.Exists("{gptbatch:team}:state") || !m.Exists("gptbatch:other:cache:"+testKey(2).String()) {
		t.Errorf("after Clear of team's cache, keys %v: the budget or other's cache went too", m.Keys())
	}
}

// An entry expires in Redis TTL after it was created; with a negative
// TTL it never does.
func TestRedisTTL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newClient(t, redistest.Start(t).Addr)
	now := time.Now()
	for _, tc := range []struct {
		name     string
		ttl      time.Duration
		created  time.Time
		min, max time.Duration // PTTL
	}{
		{"the default, a new answer", 0, now, DefaultTTL - time.Minute, DefaultTTL},
		{"a day, an answer an hour old", 24 * time.Hour, now.Add(-time.Hour), 23*time.Hour - time.Minute, 23 * time.Hour},
		{"forever", -1, now, -1, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := openRedis(t, c, tc.name, Options{TTL: tc.ttl})
			e := testEntry(1, tc.created)
			if err := r.Put(ctx, e); err != nil {
				t.Fatal(err)
			}
			got, err := c.PTTL(ctx, r.key(e.Key)).Result()
			if err != nil {
				t.Fatal(err)
			}
			if tc.max == -1 {
				if got != -1 {
					t.Errorf("PTTL = %v, want none", got)
				}
				return
			}
			if got < tc.min || got > tc.max {
				t.Errorf("PTTL = %v, want between %v and %v", got, tc.min, tc.max)
			}
		})
	}
}

func TestRedisRefusesAnotherFormat(t *testing.T) {
	t.Parallel()
	m := miniredis.RunT(t)
	m.HSet("gptbatch:team:cache", "format", "2")
	_, err := OpenRedis(context.Background(), newClient(t, m.Addr()), "team", Options{})
	if !errors.Is(err, ErrUnusable) || !strings.Contains(err.Error(), "budget team") || !strings.Contains(err.Error(), "gptbatch cache clear") {
		t.Errorf("OpenRedis(a cache of format 2) = %v, want ErrUnusable naming it and how to clear it", err)
	}
}

// A Redis lost mid-run is an error, never a miss: the caller warns and
// goes on without the cache.
func TestRedisLostIsAnError(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { c.Close() })
	r := openRedis(t, c, "team", Options{})
	if err := r.Put(ctx, testEntry(1, time.Now())); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	if got, err := r.GetMany(ctx, []Key{testKey(1)}); err == nil {
		t.Errorf("GetMany with Redis gone = %v, nil; want an error", got)
	}
	if err := r.Put(ctx, testEntry(2, time.Now())); err == nil {
		t.Errorf("Put with Redis gone = nil, want an error")
	}
	if err := r.RecordHits(ctx, 1, 1); err == nil {
		t.Errorf("RecordHits with Redis gone = nil, want an error")
	}
}

// On a Redis Cluster the entries spread over the masters, a lookup asks
// each node for its keys, and Stats, Prune and Clear visit every master.
func TestRedisCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cl := redistest.StartCluster(t)
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{cl.Servers[0].Addr}})
	t.Cleanup(func() { c.Close() })
	r := openRedis(t, c, "team", Options{})
	now := time.Now()
	const n = 300
	var es []Entry
	var keys []Key
	for i := range n {
		created := now
		if i%3 == 0 {
			created = now.Add(-48 * time.Hour)
		}
		es = append(es, testEntry(i, created))
		keys = append(keys, testKey(i))
	}
	if err := r.Put(ctx, es...); err != nil {
		t.Fatal(err)
	}
	var masters, holding atomic.Int64 // the masters are visited at once
	err := c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		size, err := m.DBSize(ctx).Result()
		masters.Add(1)
		if size > 0 {
			holding.Add(1)
		}
		return err
	})
	if err != nil || masters.Load() != 3 || holding.Load() != 3 {
		t.Errorf("%d of %d masters hold entries (%v), want all 3", holding.Load(), masters.Load(), err)
	}
	got, err := r.GetMany(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range got {
		sameEntry(t, e, es[i])
	}
	st, err := r.Stats(ctx)
	if err != nil || st.Entries != n {
		t.Errorf("Stats = %+v, %v, want %d entries", st, err, n)
	}
	if pruned, err := r.Prune(ctx, now.Add(-24*time.Hour)); pruned != n/3 || err != nil {
		t.Errorf("Prune = %d, %v, want %d", pruned, err, n/3)
	}
	if cleared, err := r.Clear(ctx); cleared != n-n/3 || err != nil {
		t.Errorf("Clear = %d, %v, want %d", cleared, err, n-n/3)
	}
}
