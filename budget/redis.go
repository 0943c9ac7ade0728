package budget

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The scripts of RedisStore.Update: a turn at the state, and its write.
var (
	//go:embed lua/take.lua
	luaTake string
	//go:embed lua/put.lua
	luaPut     string
	takeScript = redis.NewScript(luaTake)
	putScript  = redis.NewScript(luaPut)
)

// LedgerKeep is how long a RedisStore's ledger keeps an entry.
const LedgerKeep = 400 * 24 * time.Hour

// ledgerSkew is how much earlier than asked the ledger is read: its IDs
// are the server's clock, an entry's time the host's.
const ledgerSkew = 24 * time.Hour

// holdTurn is how long an Update may hold the turn before it is taken back.
const holdTurn = time.Second

// doneKeep is how long a write is known as done, longer than a resend.
const doneKeep = time.Minute

// turnPoll bounds a wait for the turn: go-redis cannot call one off.
const turnPoll = 100 * time.Millisecond

// RedisStore is a Store in Redis, shared by every gptbatch on every host
// that names the same Redis and budget name. The keys of one budget share
// the hash tag {gptbatch:NAME}, and so one slot of a Redis Cluster:
//
//	{gptbatch:NAME}:state   the State: usage.md's text, without its header
//	{gptbatch:NAME}:ledger  a stream, an entry a call, kept LedgerKeep
//	{gptbatch:NAME}:turn    a list that holds the turn at the state, handed on
//	{gptbatch:NAME}:holder  the token of the turn held; it expires after holdTurn
//	{gptbatch:NAME}:seq     numbers the turns' tokens
//	{gptbatch:NAME}:done:ID a store's last write, for one sent again; kept doneKeep
//	{gptbatch:NAME}:prices  the price table stored with the budget (prices_store.go)
//
// An Update takes the turn with the state and the server's clock in one
// script, runs its function on the host, then writes, only if the turn is
// still its own, and hands it on in another. A host that finds the turn
// held waits in a blocking pop of the list, which Redis serves in order,
// so that none starves. Every failure is an error naming the store, never
// a fall back to a local budget. Safe for concurrent use.
type RedisStore struct {
	c         redis.UniversalClient
	where     string   // the URL, password redacted, for errors
	tag       string   // the budget's hash tag
	keys      []string // state, ledger, turn, holder, done (this store's), seq
	sem       chan struct{}
	writes    int64 // numbers this store's writes, to know one sent again; guarded by sem
	hostClock bool  // gives fn the caller's now, not the server's clock: for tests
}

// OpenRedis connects to the Redis rawURL names and pings it; name picks
// the budget ("" is "default"). The forms, rediss:// for TLS in each:
//
//	redis://[[user]:password@]host[:port][/db]              one server, or any node of a cluster
//	redis://[[user]:password@]host:port?addr=host2:port2...  a cluster, naming several nodes
//	redis://[[user]:password@]host:port/db?master_name=NAME  Sentinel: a sentinel, its password; password= the master's
//
// plus go-redis's other query options. A cluster node is used as its
// cluster, as redis-cli -c does. An error names the store, no password.
func OpenRedis(ctx context.Context, rawURL, name string) (*RedisStore, error) {
	where := redactURL(rawURL)
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error quotes the URL, and an EscapeError the escape: both
		// may hold the password.
		return nil, fmt.Errorf("store %s: not a redis:// URL; a password with %% or @ in it is written percent-encoded (%%25, %%40)", where)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fmt.Errorf("store %s: want a redis:// or rediss:// URL", where)
	}
	redis.SetLogger(quietRedis{})
	q := u.Query()
	// Fail closed and at once: a command whose reply was lost is not
	// sent again, and a server that does not answer is not dialled long.
	dial := 2 * time.Second
	if q.Has("dial_timeout") {
		dial = 0
	}
	var c redis.UniversalClient
	switch {
	case q.Has("master_name"):
		o, err := redis.ParseFailoverURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("store %s: %w", where, err)
		}
		o.MaxRetries, o.DialerRetries, o.DialTimeout = -1, 1, cmp.Or(o.DialTimeout, dial)
		c = redis.NewFailoverClient(o)
	case q.Has("addr"):
		o, err := redis.ParseClusterURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("store %s: %w", where, err)
		}
		o.MaxRetries, o.DialerRetries, o.DialTimeout = -1, 1, cmp.Or(o.DialTimeout, dial)
		c = redis.NewClusterClient(o)
	default:
		o, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("store %s: %w", where, err)
		}
		o.MaxRetries, o.DialerRetries, o.DialTimeout = -1, 1, cmp.Or(o.DialTimeout, dial)
		single := redis.NewClient(o)
		// A server that refuses INFO (some hosted ones) is no cluster.
		info, err := single.Info(ctx, "cluster").Result()
		var refused redis.Error
		if err != nil && !errors.As(err, &refused) {
			single.Close()
			return nil, unreachable(where, u, err)
		}
		c = single
		if strings.Contains(info, "cluster_enabled:1") {
			single.Close()
			c = redis.NewClusterClient(&redis.ClusterOptions{
				Addrs: []string{o.Addr}, Username: o.Username, Password: o.Password, TLSConfig: o.TLSConfig,
				MaxRetries: -1, DialerRetries: 1, DialTimeout: o.DialTimeout,
				ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
			})
		}
	}
	tag := "{gptbatch:" + cmp.Or(name, "default") + "}"
	r := &RedisStore{c: c, where: where, tag: tag, sem: make(chan struct{}, 1)}
	r.keys = []string{tag + ":state", tag + ":ledger", tag + ":turn", tag + ":holder", tag + ":done:" + rand.Text(), tag + ":seq"}
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, unreachable(where, u, err)
	}
	return r, nil
}

// unreachable is the error of a store that did not answer, and says when
// a rediss:// server speaks plain Redis (a TLS handshake only times out).
func unreachable(where string, u *url.URL, err error) error {
	if u.Scheme == "rediss" {
		host, port := u.Hostname(), cmp.Or(u.Port(), "6379")
		if c, derr := net.DialTimeout("tcp", net.JoinHostPort(host, port), time.Second); derr == nil {
			defer c.Close()
			c.SetDeadline(time.Now().Add(time.Second))
			line := ""
			if _, werr := io.WriteString(c, "PING\r\n"); werr == nil {
				line, _ = bufio.NewReader(c).ReadString('\n')
			}
			if strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH") {
				return fmt.Errorf("the shared budget store is unreachable: store %s: rediss:// expected TLS, and the server answers without it: use redis://, or turn TLS on in the server", where)
			}
		}
	}
	return fmt.Errorf("the shared budget store is unreachable: store %s: %w", where, err)
}

// redactURL is rawURL with every password (userinfo, password= and
// sentinel_password=) replaced by xxxxx, even when it does not parse.
func redactURL(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil {
		q := u.Query()
		for _, k := range []string{"password", "sentinel_password"} {
			if q.Has(k) {
				q.Set(k, "xxxxx")
				u.RawQuery = q.Encode()
			}
		}
		return u.Redacted()
	}
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return "(not a URL)"
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		user, _, _ := strings.Cut(rest[:at], ":")
		return scheme + "://" + user + ":xxxxx" + rest[at:]
	}
	return rawURL
}

// quietRedis keeps go-redis from logging: every failure is an error.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// String is the store's URL with any password redacted.
func (r *RedisStore) String() string { return r.where }

// RedisClient is s's client when s is a RedisStore (else nil), for the
// response cache; it closes with s.
func RedisClient(s Store) redis.UniversalClient {
	if r, ok := s.(*RedisStore); ok {
		return r.c
	}
	return nil
}

// Close closes the connections.
func (r *RedisStore) Close() error { return r.c.Close() }

// fail is err naming the store; nil stays nil.
func (r *RedisStore) fail(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("store %s: %w", r.where, err)
}

// Update implements Store: fn gets the server's clock in now's zone, and
// runs again when the turn was taken back before the write.
func (r *RedisStore) Update(ctx context.Context, now time.Time, fn func(*State, time.Time) ([]LedgerEntry, error)) error {
	// This process's Updates take turns here, not in the server's queue.
	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-r.sem }()
	for {
		res, err := takeScript.Run(ctx, r.c, r.keys, holdTurn.Milliseconds()).Result()
		if err != nil {
			return r.fail(err)
		}
		var t turn
		if left, held := res.(int64); held {
			if t, err = r.waitTurn(ctx, time.Duration(left)*time.Millisecond); err != nil {
				return err
			}
			if t.token == "" {
				continue // not yet: ask again
			}
		} else if t, err = parseTurn(res); err != nil {
			return r.fail(err)
		}
		old, err := r.parse(t.state, t.exists)
		if err != nil {
			r.put(ctx, t, old, old, nil) //nolint:errcheck // the turn goes back; the error is err
			return r.fail(err)
		}
		at := now
		if !r.hostClock {
			at = t.at.In(now.Location())
		}
		s := old
		s.extra = slices.Clone(old.extra)
		entries, ferr := fn(&s, at)
		if ferr != nil {
			s, entries = old, nil
		}
		ok, err := r.put(ctx, t, old, s, entries)
		switch {
		case err != nil:
			return r.fail(err)
		case ferr != nil:
			return ferr
		case ok:
			return nil
		}
		// The turn was taken back (held past holdTurn): nothing was written.
	}
}

// turn is the turn at the state: its token, the server's clock, the state.
type turn struct {
	token  string
	at     time.Time
	state  string
	exists bool // the state key exists
}

// parseTurn reads a turn: "token s µs 1|0\nstate".
func parseTurn(v any) (turn, error) {
	s, _ := v.(string)
	head, state, _ := strings.Cut(s, "\n")
	if f := strings.Fields(head); len(f) == 4 {
		sec, err1 := strconv.ParseInt(f[1], 10, 64)
		us, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 == nil && err2 == nil {
			return turn{token: f[0], at: time.Unix(sec, us*1000), state: state, exists: f[3] == "1"}, nil
		}
	}
	return turn{}, fmt.Errorf("not a turn at the state: %.40q", s)
}

// waitTurn waits up to d (and turnPoll) for the turn, which has no token
// if it did not come.
func (r *RedisStore) waitTurn(ctx context.Context, d time.Duration) (turn, error) {
	if err := ctx.Err(); err != nil {
		return turn{}, err
	}
	d = min(max(d, time.Millisecond), turnPoll)
	res, err := r.c.Do(ctx, "blpop", r.keys[2], strconv.FormatFloat(d.Seconds(), 'f', 3, 64)).StringSlice()
	switch {
	case errors.Is(err, redis.Nil):
		return turn{}, nil
	case err != nil:
		return turn{}, r.fail(err)
	}
	t, err := parseTurn(res[len(res)-1])
	return t, r.fail(err)
}

// parse reads the state key's value; a key that does not exist is fresh.
func (r *RedisStore) parse(text string, exists bool) (State, error) {
	if !exists {
		return State{}, nil
	}
	s, err := ParseState([]byte(text))
	if err != nil {
		return State{}, fmt.Errorf("%s is corrupt; gptbatch will not reset it, fix or delete it: %w", r.keys[0], err)
	}
	return s, nil
}

// put writes s, unless it is old, with entries, and hands the turn on,
// whatever ctx says; ok is false, nothing written, if the turn was lost.
func (r *RedisStore) put(ctx context.Context, t turn, old, s State, entries []LedgerEntry) (ok bool, err error) {
	r.writes++
	minID := max(t.at.UnixMilli()-LedgerKeep.Milliseconds(), 0)
	text := ""
	if b := s.Format(); len(entries) > 0 || !bytes.Equal(b, old.Format()) {
		text = string(bytes.TrimPrefix(b, []byte(header)))
	}
	args := []any{t.token, holdTurn.Milliseconds(), r.writes, doneKeep.Milliseconds(), minID, text}
	for i := range entries {
		b, err := entries[i].appendJSON(nil)
		if err != nil {
			return false, fmt.Errorf("ledger entry: %w", err)
		}
		args = append(args, b[:len(b)-1]) // a stream entry: no newline
	}
	n, err := putScript.Run(context.WithoutCancel(ctx), r.c, r.keys, args...).Int()
	return n == 1, err
}

// Load reads the state, without writing. Its times are the server's.
func (r *RedisStore) Load(ctx context.Context) (State, error) {
	text, err := r.c.Get(ctx, r.keys[0]).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return State{}, r.fail(err)
	}
	s, err := r.parse(text, err == nil)
	return s, r.fail(err)
}

// Ledger calls fn, until it fails, for each entry the server stamped at or
// after from (zero: all), oldest first.
func (r *RedisStore) Ledger(ctx context.Context, from time.Time, fn func(LedgerEntry) error) error {
	start := "-"
	if !from.IsZero() {
		start = strconv.FormatInt(max(from.UnixMilli(), 0), 10)
	}
	const page = 1000
	for {
		msgs, err := r.c.XRangeN(ctx, r.keys[1], start, "+", page).Result()
		if err != nil {
			return r.fail(err)
		}
		for _, m := range msgs {
			v, _ := m.Values["e"].(string)
			var e LedgerEntry
			if err := json.Unmarshal([]byte(v), &e); err != nil {
				return r.fail(fmt.Errorf("%s entry %s: not a ledger entry: %w", r.keys[1], m.ID, err))
			}
			if err := fn(e); err != nil {
				return err
			}
		}
		if len(msgs) < page {
			return nil
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
}

// Report implements Store: every host's calls.
func (r *RedisStore) Report(ctx context.Context, opt ReportOptions, loc *time.Location) (Report, error) {
	return buildReport(opt, loc, r.scan(ctx, opt.Since))
}

// BatchEntries implements Store: every host's entries.
func (r *RedisStore) BatchEntries(ctx context.Context, since time.Time, ids map[string]bool) (map[string]int, error) {
	return countBatches(ids, r.scan(ctx, since))
}

// scan reads the ledger from ledgerSkew before since (zero: all of it).
func (r *RedisStore) scan(ctx context.Context, since time.Time) ledgerRead {
	if !since.IsZero() {
		since = since.Add(-ledgerSkew)
	}
	return func(fn func(LedgerEntry) error) (int, error) { return 0, r.Ledger(ctx, since, fn) }
}
