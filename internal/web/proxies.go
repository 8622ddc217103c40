package web

// proxyRoutes registers the proxies pages (none yet).
func (s *Server) proxyRoutes() []route { return nil }
