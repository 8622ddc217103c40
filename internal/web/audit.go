package web

// auditRoutes registers the audit pages (none yet).
func (s *Server) auditRoutes() []route { return nil }
