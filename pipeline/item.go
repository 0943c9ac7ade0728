package pipeline

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/schema"
	"github.com/gptbatch/gptbatch/jsonl"
)

// item is one input line on its way through the stages, or (--pack) a
// request that carries several.
type item struct {
	req      *jsonl.Request
	endpoint string    // jsonl.EndpointChat, EndpointResponses or EndpointEmbeddings
	ep       *endpoint // its entry in endpoints, set by prepare
	model    string
	body     []byte             // the exact JSON sent to the API
	prompt   int64              // prompt tokens as the API counts them (chat: by the chat formula)
	maxOut   int64              // output tokens the request may use (max tokens × n)
	est      budget.Estimate    // what reserving it charges
	price    *budget.ModelPrice // nil when the model's price is unknown
	tier     budget.Tier        // the tier it is estimated at: standard, priority or (--via batch) batch
	priced   bool               // its price on tier is known
	prices   *budget.Prices     // the table it is priced by
	exact    bool               // prompt is the exact count, not the byte bound
	// unbounded says why prompt cannot bound what the request bills (it
	// continues a conversation stored at the API); "" when it can.
	unbounded string
	result    *jsonl.Result // set when the line is finished without a call
	attempts  int
	answered  answer    // the last answer its call got, once it got one
	reserved  time.Time // when its reservation was done, for Gate.Lag

	// --schema (schema.go).
	schema       *schema.Schema // what its answer is held to; nil: not checked
	schemaTokens int64          // the schema's share of prompt
	prior        int            // calls made for the line's earlier tries: a re-ask's attempts go on from there

	// Embeddings.
	single  bool            // one input (a text or a token array): the result has "embedding"
	floats  bool            // gptbatch chose base64 on the wire: the result has floats
	input   json.RawMessage // the input as the line gave it
	packKey string          // lines with equal keys may share a request (--pack); "" may not

	// A pack (--pack): the lines sent in one request, in input order. req is
	// the first one's; results are theirs once the request is answered.
	members []*item
	results []*jsonl.Result

	// What the response cache knows of the line (cache.go).
	lineCache
}

// errorResult is the result of a line that failed with type typ.
func errorResult(req *jsonl.Request, typ, msg string, status int) *jsonl.Result {
	return &jsonl.Result{
		ID:       req.ID,
		Line:     req.Line,
		Metadata: req.Metadata,
		Error:    &jsonl.Error{Type: typ, Message: msg, Status: status},
	}
}

// spread is res, the result of an item that got no answer, as its lines'
// results: the line's, or a copy for each member of a pack, naming its
// line.
func (it *item) spread(res *jsonl.Result) []*jsonl.Result {
	if it.members == nil {
		return []*jsonl.Result{res}
	}
	out := make([]*jsonl.Result, len(it.members))
	prefix := fmt.Sprintf("line %d: ", it.req.Line)
	for i, m := range it.members {
		e := *res.Error
		if rest, ok := strings.CutPrefix(e.Message, prefix); ok {
			e.Message = fmt.Sprintf("line %d: %s", m.req.Line, rest)
		}
		out[i] = &jsonl.Result{ID: m.req.ID, Line: m.req.Line, Metadata: m.req.Metadata, Attempts: res.Attempts, Error: &e}
	}
	return out
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only called with strings and integers
	}
	return b
}
