<p>{{message}}</p>
<p><a href="{{base}}">Back to the overview</a></p>
