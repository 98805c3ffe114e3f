"""The mailbox pages. Open to anyone who reaches the demo: they stand in for the
recipients' own inboxes, and external contacts have no account."""

from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, render

from .models import MailboxMessage

PER_PAGE = 50


def message_list(request):
    recipient = request.GET.get("to", "").strip()
    messages = MailboxMessage.objects.defer("text", "html", "headers")
    if recipient:
        messages = messages.filter(to__icontains=recipient)
    page = Paginator(messages, PER_PAGE).get_page(request.GET.get("page"))
    context = {"page": page, "recipient": recipient, "recipients": known_recipients()}
    return render(request, "demo_mailbox/message_list.html", context)


def message_detail(request, pk):
    message = get_object_or_404(MailboxMessage, pk=pk)
    return render(request, "demo_mailbox/message_detail.html", {"message": message})


def known_recipients() -> list[str]:
    addresses = set()
    for to in MailboxMessage.objects.values_list("to", flat=True).distinct():
        addresses.update(address.strip() for address in to.split(",") if address.strip())
    return sorted(addresses)
