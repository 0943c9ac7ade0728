package openaitest

// faults are the switches a test turns while the server runs, to make the
// Files and Batch APIs misbehave as the real ones sometimes do.
type faults struct {
	queueTokens    int  // the enqueued-token limit, once set (see SetQueueTokens)
	queueTokensSet bool // queueTokens replaces BatchConfig.QueueTokens
}

// SetQueueTokens sets the enqueued-token limit of each model from now on,
// in place of BatchConfig.QueueTokens (0: no limit): the organisation's
// other batches ended, say, and the limit has room again.
func (s *Server) SetQueueTokens(n int) {
	s.ext.mu.Lock()
	defer s.ext.mu.Unlock()
	s.ext.faults.queueTokens, s.ext.faults.queueTokensSet = n, true
}

// queueTokens is the enqueued-token limit now. It requires s.ext.mu held.
func (s *Server) queueTokens() int {
	if s.ext.faults.queueTokensSet {
		return s.ext.faults.queueTokens
	}
	return s.cfg.Batch.QueueTokens
}
