package web

// userRoutes registers the users pages (none yet).
func (s *Server) userRoutes() []route { return nil }
