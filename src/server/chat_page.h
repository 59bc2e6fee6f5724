// The chat page served at / by leanlm serve: one static HTML file (src/server/chat_page.html, with
// its CSS and JavaScript inline) compiled into the binary, so the page needs no files, CDN or build
// step at run time. It talks to the server's own API: /v1/models, then /v1/chat/completions as SSE.
#pragma once
#include <string>

namespace leanlm {

const std::string& chat_page_html();

}  // namespace leanlm
