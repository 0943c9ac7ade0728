// Package cache is gptbatch's response cache: the API's complete answers
// kept under a key of the request that got them (KeyOf), so that a run
// that sends the same request again is answered without paying again.
//
// A Store is one of two: File, an SQLite database in WAL mode that every
// gptbatch on the host shares (the default place, or a path the user gives),
// and Redis, beside a budget kept in Redis, that every host shares. Both
// check each entry on the way out against a checksum binding it to its
// key, so that an entry that does not match its key is never served.
//
// The package decides nothing about what is worth keeping: the caller
// puts complete answers only (not errors, not an answer cut off at the
// output cap, not a content-filtered one), and turns a Store's errors
// mid-run into a warning and goes on without it.
package cache

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Entry is one stored answer.
type Entry struct {
	// Key is the key of the request (KeyOf).
	Key Key
	// Endpoint is the path the request went to, "/v1/chat/completions".
	Endpoint string
	// Model is the model the answer names, for reports.
	Model string
	// Created is when the answer was received; stored to the millisecond.
	Created time.Time
	// Cost is what the answer cost when it was paid for, in picodollars
	// (1e-12 USD): what a hit saves. Negative when its price was unknown.
	Cost int64
	// Body is the API's response body as received.
	Body []byte
}

// Size is the body's size in bytes.
func (e *Entry) Size() int { return len(e.Body) }

// sum binds the entry to its key: SHA-256 over a version, the key and
// every field a hit serves. An entry whose stored sum differs, edited by
// hand or put under another key, is not served.
func (e *Entry) sum() [sha256.Size]byte {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	field := func(b []byte) {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(b)))])
		h.Write(b)
	}
	field([]byte("gptbatch-cache-entry-v1"))
	field(e.Key[:])
	field([]byte(e.Endpoint))
	field([]byte(e.Model))
	h.Write(binary.BigEndian.AppendUint64(n[:0], uint64(e.Created.UnixMilli())))
	h.Write(binary.BigEndian.AppendUint64(n[:0], uint64(e.Cost)))
	field(e.Body)
	var s [sha256.Size]byte
	h.Sum(s[:0])
	return s
}

// Stats is what a Store holds and has served.
type Stats struct {
	// Entries and Bytes are the answers stored and their bodies' bytes.
	Entries, Bytes int64
	// DiskBytes is the space the store takes on disk (File: the database
	// and its write-ahead log); 0 for Redis.
	DiskBytes int64
	// Oldest and Newest are the oldest and newest answers' Created; zero
	// when there are none.
	Oldest, Newest time.Time
	// Hits is how many requests were answered from the store, and Saved
	// what they would have cost, in picodollars, as RecordHits was told.
	Hits, Saved int64
}

// Store is a response cache. Every method is safe for concurrent use, also
// by other processes sharing the same store; an error is a failure of the
// store itself (the disk, the connection), never a miss.
type Store interface {
	// Get returns the entry stored under k, or nil if there is none, it is
	// older than the TTL, or it does not match k (Options.OnMismatch
	// hears of that one).
	Get(ctx context.Context, k Key) (*Entry, error)
	// GetMany is Get for a block of keys, in one transaction or round
	// trip: the i-th entry is keys[i]'s, nil for a miss. A key asked
	// twice may get the same *Entry twice: the entries are read-only.
	GetMany(ctx context.Context, keys []Key) ([]*Entry, error)
	// Put stores entries, replacing any under the same key, in one
	// transaction or round trip. Putting an entry twice, or from two
	// processes at once, is harmless.
	Put(ctx context.Context, entries ...Entry) error
	// RecordHits adds n hits that saved saved picodollars to the
	// counters Stats reports.
	RecordHits(ctx context.Context, n, saved int64) error
	// Stats says what the store holds and has served.
	Stats(ctx context.Context) (Stats, error)
	// Clear removes every entry and zeroes the counters; it returns the
	// number of entries removed.
	Clear(ctx context.Context) (int64, error)
	// Prune removes the entries created before t; it returns their number.
	Prune(ctx context.Context, t time.Time) (int64, error)
	// Close releases the store.
	Close() error
	// String says where the store is, for messages: a path, or a Redis
	// address and name.
	String() string
}

// DefaultTTL is how long an answer is served by default (--cache-ttl):
// long enough for the weekly and monthly re-runs a cache is for, short
// enough that a model alias that moved to a new snapshot stops answering
// with the old one within a month, and that a team cache in Redis, whose
// memory costs more than disk, does not grow without end.
const DefaultTTL = 30 * 24 * time.Hour

// Options tune a Store. The zero value is DefaultTTL, the wall clock and
// no report of mismatched entries.
type Options struct {
	// TTL is how long an answer is served after it was created. Zero is
	// DefaultTTL; negative is forever (in Redis, no expiry).
	TTL time.Duration
	// Now is the clock the TTL is measured on. Nil: time.Now.
	Now func() time.Time
	// OnMismatch hears of each entry that was not served because it does
	// not match its key: it was edited, damaged or put under another key.
	// It may be called from any goroutine. Nil: not told.
	OnMismatch func(k Key)
}

func (o Options) ttl() time.Duration {
	if o.TTL == 0 {
		return DefaultTTL
	}
	return o.TTL
}

func (o Options) now() time.Time {
	if o.Now == nil {
		return time.Now()
	}
	return o.Now()
}

// cutoff is the oldest Created still served, in Unix milliseconds.
func (o Options) cutoff() int64 {
	ttl := o.ttl()
	if ttl < 0 {
		return -1 << 63
	}
	return o.now().Add(-ttl).UnixMilli()
}

// check returns e if its stored sum is right, else nil (and says so).
func (o Options) check(e *Entry, sum []byte) *Entry {
	if s := e.sum(); string(s[:]) == string(sum) {
		return e
	}
	o.mismatch(e.Key)
	return nil
}

func (o Options) mismatch(k Key) {
	if o.OnMismatch != nil {
		o.OnMismatch(k)
	}
}

// ErrUnusable marks a store that cannot be opened as a cache: a corrupt
// file, another format, one that cannot be written. The error's message
// names the file and what to do about it.
var ErrUnusable = errors.New("cache unusable")

// unusable is an error that is ErrUnusable, with its own message.
type unusable struct{ msg string }

func (e *unusable) Error() string        { return e.msg }
func (e *unusable) Is(target error) bool { return target == ErrUnusable }

func unusablef(format string, args ...any) error {
	return &unusable{fmt.Sprintf(format, args...)}
}
